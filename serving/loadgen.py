"""Open-loop HTTP load generator for `recsys serve`: fixed request rates, latency percentiles.

Requests are sent on a fixed schedule (one every 1/rate seconds) whatever the server does, and each
latency is measured from the moment its request was due, not from when a free connection sent it,
so a server that falls behind shows it in the tail instead of slowing the load (no coordinated
omission). Connections are kept alive, one per worker thread. Standard library only, so it runs
from any Python next to the server:

    python serving/loadgen.py --url http://127.0.0.1:8080/v1/predict --body request.json \\
        --rates 50,100,200 --seconds 20

It prints one line per rate (JSON with --json): sent, errors (not 200, or no answer), achieved rate,
and p50/p90/p99/max ms of the answered requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import statistics
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass


@dataclass
class RateResult:
    rate: float
    seconds: float
    sent: int
    errors: int
    achieved_rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


class Connections:
    """One keep-alive HTTP connection per thread."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http":
            raise SystemExit(f"{url}: only http:// URLs are supported (the server binds plain HTTP)")
        self.host, self.port, self.path = parsed.hostname, parsed.port or 80, parsed.path or "/"
        self.local = threading.local()

    def post(self, body: bytes) -> int:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request("POST", self.path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            connection.close()
            self.local.connection = None
            return 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_rate(connections: Connections, body: bytes, rate: float, seconds: float, workers: int) -> RateResult:
    """Send `rate` requests per second for `seconds`; latency counts from each request's due time."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def send(due: float) -> None:
        status = connections.post(body)
        finished = time.perf_counter()
        with lock:
            latencies.append(finished - due)
            statuses.append(status)

    count = int(rate * seconds)
    if count < 1:
        raise SystemExit(f"{rate:g} requests/s for {seconds:g} s sends no request; give more seconds")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index in range(count):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, due)
    elapsed = time.perf_counter() - started
    answered = [latency * 1e3 for latency, status in zip(latencies, statuses) if status == 200]
    milliseconds = answered or [math.nan]  # percentiles of answered requests only; errors are counted apart
    return RateResult(
        rate=rate,
        seconds=round(elapsed, 3),
        sent=count,
        errors=sum(status != 200 for status in statuses),
        achieved_rate=round(count / elapsed, 1),
        p50_ms=round(statistics.median(milliseconds), 3),
        p90_ms=round(percentile(milliseconds, 0.90), 3),
        p99_ms=round(percentile(milliseconds, 0.99), 3),
        max_ms=round(max(milliseconds), 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080/v1/predict", help="endpoint to POST to")
    parser.add_argument("--body", required=True, help="file with the JSON request body to send every time")
    parser.add_argument("--rates", default="50,100,200", help="comma-separated requests per second (50,100,200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per rate (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at the first rate, not reported (2)")
    parser.add_argument("--workers", type=int, default=16, help="concurrent connections at most (default 16)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per rate")
    arguments = parser.parse_args()
    body = open(arguments.body, "rb").read()
    rates = [float(rate) for rate in arguments.rates.split(",")]
    connections = Connections(arguments.url)
    if connections.post(body) != 200:
        raise SystemExit(f"{arguments.url} does not answer 200 to the body in {arguments.body}")
    if arguments.warmup > 0:
        run_rate(connections, body, rates[0], max(arguments.warmup, 1 / rates[0]), arguments.workers)
    for rate in rates:
        result = run_rate(connections, body, rate, arguments.seconds, arguments.workers)
        if arguments.json:
            print(json.dumps(asdict(result)), flush=True)
        else:
            print(
                f"rate {result.rate:g}/s: sent {result.sent}, errors {result.errors}, achieved "
                f"{result.achieved_rate}/s, p50 {result.p50_ms} ms, p90 {result.p90_ms} ms, "
                f"p99 {result.p99_ms} ms, max {result.max_ms} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
