"""Hostile input against a real `recsys serve` process: fuzzed requests, floods, slow clients (issue 15).

Trains a small DLRM (hashing tables) on a synthetic Criteo-like cache, exports it, starts
`recsys serve` on it and measures, all against that one process:

1. fuzz: `--requests` requests over raw sockets, spread over every endpoint and method: random bytes,
   structurally mutated valid bodies (values swapped for other JSON: deep nesting, 30-digit integers,
   wrong types, keys dropped, cut-off JSON) and malformed request lines and headers. Counts by endpoint
   and status class; every 4xx must carry a JSON `detail`; zero 5xx is the target; at the end a valid
   request must get the same answer as before the fuzz;
2. floods: server RSS and `/metrics` size before and after `--junk-paths` distinct 200-byte unknown
   paths, and after large bodies (just under and over the body limit);
3. slow clients: a normal client's time to an answer alone, then while N connections trickle one
   header byte a second (below and above the connection cap).

    python benchmarks/bench_hardening.py [--requests 10000] [--junk-paths 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recsys.quiet import quiet_libraries  # noqa: E402

quiet_libraries()

import numpy as np  # noqa: E402
from common import WORKDIR, machine, synthetic_cache, synthetic_file  # noqa: E402
from raw_rows import NAMES, json_rows  # noqa: E402

from recsys.export.artifact import export_model  # noqa: E402
from recsys.tables import spec_from_mapping  # noqa: E402
from recsys.train.config import TrainConfig  # noqa: E402
from recsys.train.finished import finished_model  # noqa: E402
from recsys.train.job import Job  # noqa: E402
from recsys.train.loop import train  # noqa: E402

PORT = 8771
ENDPOINTS = ["/v1/predict", "/v1/lookup", "/v1/metadata", "/healthz", "/metrics", "/nowhere"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"]
SERVER_LOG = WORKDIR / "hardening-server.log"
SERVER_OPTIONS = ["--max-connections", "256", "--header-timeout", "10", "--body-timeout", "30"]


def exported_model() -> Path:
    cache = synthetic_cache(20_000, 0.02)
    spec = spec_from_mapping({"strategy": "hashing", "compression": 10})
    job = Job(cache, spec, "dlrm", TrainConfig(epochs=1, progress=False), {"bottom_mlp": [32], "top_mlp": [32]})
    result = train(job)
    return export_model(finished_model(job, result.model, result.metrics), WORKDIR / "hardening-model")


def exchange(raw: bytes, timeout: float = 30) -> bytes:
    """Send one raw request on a fresh connection; the whole answer (the server closes after it).

    A server that answers before the body is in (413, 400) closes with unread bytes, which resets the
    connection: what arrived before the reset is the answer.
    """
    chunks = []
    with socket.create_connection(("127.0.0.1", PORT), timeout=timeout) as connection:
        try:
            connection.sendall(raw)
            connection.shutdown(socket.SHUT_WR)
        except OSError:  # refused or answered before the request was all sent
            pass
        try:
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def request(method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: localhost", "connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def status_and_detail(answer: bytes) -> tuple[int, bool]:
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, False  # no HTTP answer at all: counted apart
    try:
        return status, bool(json.loads(body).get("detail"))
    except (ValueError, AttributeError):
        return status, False


def random_json(generator: random.Random, depth: int = 0):
    choice = generator.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return generator.random() < 0.5
    if choice == 2:
        return generator.randrange(-(10**30), 10**30)
    if choice == 3:
        return generator.uniform(-1e308, 1e308)
    if choice == 4:
        return "".join(chr(generator.randrange(0x20, 0x2FFF)) for _ in range(generator.randrange(12)))
    if choice == 5:
        return f"{generator.randrange(2**32):08x}"
    if choice == 6:
        return [random_json(generator, depth + 1) for _ in range(generator.randrange(4))]
    if choice == 7:
        return {f"k{index}": random_json(generator, depth + 1) for index in range(generator.randrange(4))}
    nested: list = []
    for _ in range(generator.randrange(2, 600)):  # deep, but within what json.dumps writes
        nested = [nested]
    return nested


def mutated_body(generator: random.Random, rows: list[dict]) -> bytes:
    """A valid predict or lookup body with some values, keys or structure changed."""
    chosen = [dict(row) for row in generator.sample(rows, generator.randrange(1, 4))]
    for _ in range(generator.randrange(1, 4)):
        row = generator.choice(chosen)
        field = generator.choice(NAMES)
        if generator.random() < 0.2:
            row.pop(field, None)
        else:
            row[field] = random_json(generator)
    lookup = {"feature": generator.choice([*NAMES, 7, None, ["C1"]]), "values": random_json(generator)}
    body = generator.choice([{"rows": chosen}, lookup, chosen, {"rows": chosen, **lookup}, {"rows": "x"}])
    text = json.dumps(body).encode()
    if generator.random() < 0.1:
        text = text[: generator.randrange(len(text))]  # cut-off JSON
    if generator.random() < 0.05:
        text = b"[" * 200_000 + b"]" * 200_000  # nesting far beyond any parser's limit
    return text


def malformed_head(generator: random.Random) -> bytes:
    """A request line or headers that are not HTTP, or lie about the body."""
    junk = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 60)))
    choices = [
        junk + b"\r\n\r\n",
        b"GET /" + junk.replace(b" ", b"_") + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\nconnection: close\r\n\r\n",
        b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nconnection: close\r\n\r\n{}",
        b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n",
        b"GET /healthz HTTP/1.1\r\n" + junk.replace(b"\r", b"").replace(b"\n", b"") + b"\r\nconnection: close\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nhost: x\r\n\r\n",
    ]
    return generator.choice(choices)


def cut_short(raw: bytes) -> bool:
    """Whether `raw` declares a longer body than it holds (the client then closes: it is gone, not answered)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value) > len(body)
    return False


def fuzz(count: int, rows: list[dict], seed: int) -> tuple[Counter, Counter, Counter]:
    """(answers by endpoint and status class, 4xx without a detail by endpoint, connections without an answer
    by whether the request's body was cut short)."""
    generator = random.Random(seed)
    answers: Counter = Counter()
    undetailed: Counter = Counter()
    silent: Counter = Counter()
    for index in range(count):
        kind = index % 4
        endpoint = generator.choice(ENDPOINTS)
        method = generator.choice(METHODS)
        if kind == 0:
            raw = request(method, endpoint, bytes(generator.randrange(256) for _ in range(generator.randrange(300))))
        elif kind in (1, 2):
            raw = request(generator.choice(["POST", method]), endpoint, mutated_body(generator, rows))
        else:
            raw, endpoint = malformed_head(generator), "(malformed head)"
        status, detailed = status_and_detail(exchange(raw))
        if status == 0:
            silent[cut_short(raw)] += 1
            continue
        answers[endpoint, f"{status // 100}xx"] += 1
        if 400 <= status < 500 and not detailed and method != "HEAD":
            undetailed[endpoint] += 1
    return answers, undetailed, silent


def server_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def metrics_size() -> int:
    return len(exchange(request("GET", "/metrics")).partition(b"\r\n\r\n")[2])


def flood_junk_paths(count: int, seed: int) -> None:
    generator = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    for index in range(count):
        path = f"/junk/{index}/" + "".join(generator.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=190))
        connection.request("GET", path)
        connection.getresponse().read()
    connection.close()


def flood_large_bodies(count: int, body_bytes: int) -> Counter:
    body = b'{"rows": [' + b"1," * (body_bytes // 2 - 8) + b"1]}"
    statuses: Counter = Counter()
    for _ in range(count):
        status, _ = status_and_detail(exchange(request("POST", "/v1/predict", body)))
        statuses[status] += 1
    return statuses


def normal_client_times(rows: list[dict], count: int) -> tuple[np.ndarray, Counter]:
    body = json.dumps({"rows": rows[:1]}).encode()
    seconds, statuses = [], Counter()
    for _ in range(count):
        started = time.perf_counter()
        status, _ = status_and_detail(exchange(request("POST", "/v1/predict", body)))
        seconds.append(time.perf_counter() - started)
        statuses[status] += 1
        time.sleep(0.05)
    return np.array(seconds) * 1e3, statuses


def with_slow_clients(count: int, rows: list[dict]) -> tuple[np.ndarray, Counter, float]:
    """A normal client's times while `count` connections send one header byte a second; and how long the
    server took to close all of them."""
    slow = [socket.create_connection(("127.0.0.1", PORT)) for _ in range(count)]
    stop = threading.Event()
    opened = time.monotonic()

    def trickle() -> None:
        head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 100
        for position in range(len(head)):
            for connection in slow:
                try:
                    connection.send(head[position : position + 1])
                except OSError:
                    pass
            if stop.wait(1.0):
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    time.sleep(1.0)
    times, statuses = normal_client_times(rows, 30)
    for connection in slow:  # wait for the server to close them (header deadline)
        connection.settimeout(max(0.1, 30 - (time.monotonic() - opened)))
        try:
            while connection.recv(4096):
                pass
        except OSError:
            pass
    all_closed = time.monotonic() - opened
    stop.set()
    thread.join()
    for connection in slow:
        connection.close()
    return times, statuses, all_closed


def start_server(artifact: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "recsys", "serve", str(artifact), "--port", str(PORT), *SERVER_OPTIONS],
        stdout=subprocess.DEVNULL, stderr=SERVER_LOG.open("w"), start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if status_and_detail(exchange(request("GET", "/healthz")))[0] == 200:
                return server
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the server did not start")


def print_fuzz(answers: Counter, undetailed: Counter, silent: Counter, seconds: float) -> None:
    total = sum(answers.values()) + sum(silent.values())
    print(f"\n### Fuzz: {total:,} requests in {seconds:.1f} s\n")
    print("| endpoint | 2xx | 4xx | 5xx | 4xx without detail |")
    print("|---|---:|---:|---:|---:|")
    for endpoint in [*ENDPOINTS, "(malformed head)"]:
        counts = [answers[endpoint, kind] for kind in ("2xx", "4xx", "5xx")]
        print(f"| {endpoint} | {' | '.join(f'{count:,}' for count in counts)} | {undetailed[endpoint]:,} |")
    fives = sum(count for (_, kind), count in answers.items() if kind == "5xx")
    print(
        f"\n5xx answers: {fives}; connections closed without an answer: {silent[True]} whose body was shorter than "
        f"its Content-Length before the client closed its side (a client gone mid-body: counted as 499 in "
        f"/metrics, no one to answer), {silent[False]} others"
    )


def fuzz_section(server: subprocess.Popen, rows: list[dict], requests: int, seed: int) -> None:
    valid = request("POST", "/v1/predict", json.dumps({"rows": rows[:8]}).encode())
    before = exchange(valid).partition(b"\r\n\r\n")[2]
    started = time.monotonic()
    print_fuzz(*fuzz(requests, rows, seed), time.monotonic() - started)
    same = exchange(valid).partition(b"\r\n\r\n")[2] == before
    print(f"server alive after the fuzz: {server.poll() is None}; same answer to a valid request: {same}")


def flood_section(server: subprocess.Popen, junk_paths: int, seed: int) -> None:
    print("\n### Floods\n")
    print("| after | server RSS MB | /metrics bytes | statuses |")
    print("|---|---:|---:|---|")

    def row(what: str, statuses: str = "") -> None:
        print(f"| {what} | {server_rss(server.pid) / 1e6:.1f} | {metrics_size():,} | {statuses} |", flush=True)

    row("start")
    flood_junk_paths(junk_paths, seed)
    row(f"{junk_paths:,} distinct 200-byte junk paths")
    for count, size in ((50, (8 << 20) - 4096), (50, 20 << 20)):
        row(f"{count} bodies of {size / 2**20:.1f} MiB", str(dict(flood_large_bodies(count, size))))


def slow_section(rows: list[dict]) -> None:
    print("\n### Slow clients (one header byte a second; header deadline 10 s, cap 256 connections)\n")
    print("| slow connections | normal client p50 ms | max ms | normal statuses | all slow ones closed after s |")
    print("|---:|---:|---:|---|---:|")
    times, statuses = normal_client_times(rows, 30)
    print(f"| 0 | {np.median(times):.1f} | {times.max():.1f} | {dict(statuses)} | |")
    for count in (100, 250, 400):
        times, statuses, closed = with_slow_clients(count, rows)
        print(f"| {count} | {np.median(times):.1f} | {times.max():.1f} | {dict(statuses)} | {closed:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--junk-paths", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    artifact = exported_model()
    rows = json_rows(synthetic_file(20_000, 0.02), 64)
    server = start_server(artifact)
    try:
        print(f"machine: {machine()}; server options: {' '.join(SERVER_OPTIONS)}")
        fuzz_section(server, rows, arguments.requests, arguments.seed)
        flood_section(server, arguments.junk_paths, arguments.seed)
        slow_section(rows)
        print(f"\nserver alive at the end: {server.poll() is None}")
        log = SERVER_LOG.read_text()
        print(f"server log: {log.count('Traceback')} tracebacks, {log.count('ERROR')} ERROR lines ({SERVER_LOG})")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
