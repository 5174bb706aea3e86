"""Connection limits of `recsys serve`: idle and slow clients are closed, and a full server says so at once.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but it has no deadline for a
request's head: a client that sends nothing, or one header byte a second, holds its connection (and a
file descriptor) for as long as it likes, and enough of them lock everyone else out (slowloris). This
module's protocol, uvicorn's h11 protocol with two additions, closes that gap:

- a *header deadline*: from the moment a connection opens, or its previous answer was sent, the next
  request's head must arrive in full within `header_timeout` seconds, else the client gets a 408 and the
  connection is closed (each byte does not restart the clock);
- a *connection cap*: a connection beyond `max_connections` gets a 503 and is closed as soon as it opens,
  before anything is read, so the server never runs out of descriptors and a client learns at once to retry.

The body's own deadline (`body_timeout`) is kept by the app, which reads the body (`server.json_body`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class ConnectionLimits:
    """The server's limits on connections and on how long a client may take (seconds)."""

    max_connections: int = 256
    keep_alive_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0


def refusal(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON detail that closes the connection."""
    body = orjson.dumps({"detail": detail})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a header deadline and a connection cap of `limits`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol  # imported when serving, not for `--help`

    saturated = refusal(503, "Service Unavailable", f"the server holds its limit of {limits.max_connections} "
                        "connections; retry shortly")  # fmt: skip
    malformed = refusal(400, "Bad Request", "not a valid HTTP/1.1 request: check the request line, the header "
                        "names and values (at most 16 KiB in all) and the body's framing")  # fmt: skip
    too_slow = refusal(408, "Request Timeout", f"no complete request head within {limits.header_timeout:g} s")

    class GuardedProtocol(H11Protocol):
        """An h11 connection that must send each request's head within the deadline, refused when over the cap."""

        header_deadline: asyncio.TimerHandle | None = None
        awaited_after: object = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(saturated)
                transport.close()
                return
            self.await_request_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.cancel_deadline_once_a_request_began()

        def on_response_complete(self) -> None:
            self.await_request_head()
            super().on_response_complete()
            self.cancel_deadline_once_a_request_began()

        def connection_lost(self, exc: Exception | None) -> None:
            self.cancel_header_deadline()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            """Refuse bytes that are not HTTP with a JSON detail, like every other refusal (uvicorn's is plain text)."""
            self.cancel_header_deadline()
            self.transport.write(malformed)
            self.transport.close()

        def await_request_head(self) -> None:
            """Start the clock for the next request's head (the current cycle, if any, is complete)."""
            self.cancel_header_deadline()
            self.awaited_after = self.cycle
            self.header_deadline = self.loop.call_later(limits.header_timeout, self.head_too_slow)

        def cancel_deadline_once_a_request_began(self) -> None:
            if self.header_deadline is not None and self.cycle is not self.awaited_after:
                self.cancel_header_deadline()

        def cancel_header_deadline(self) -> None:
            if self.header_deadline is not None:
                self.header_deadline.cancel()
                self.header_deadline = None

        def head_too_slow(self) -> None:
            self.header_deadline = None
            if not self.transport.is_closing():
                self.transport.write(too_slow)
                self.transport.close()

    return GuardedProtocol


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A socket bound to `host`:`port` and listening, or a ValueError naming the option to change.

    Bound here, before the server announces itself, so that a port in use or an address that is not this
    machine's is one line and exit status 2, not a log line from inside uvicorn after "serving".
    """
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: {error.strerror}; give a name or address of this machine") from None
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(backlog)
    except OSError as error:
        listener.close()
        advice = BIND_ADVICE.get(error.errno, "check --host and --port")
        raise ValueError(f"--host {host} --port {port}: cannot listen there ({error.strerror}); {advice}") from None
    return listener


BIND_ADVICE = {
    errno.EADDRINUSE: "another process listens on that port: stop it or pick another --port",
    errno.EADDRNOTAVAIL: "that is not an address of this machine: use 127.0.0.1, or 0.0.0.0 for every interface",
    errno.EACCES: "ports below 1024 need privileges: pick --port 1024 or above",
}


def serve_app(app, listener: socket.socket, limits: ConnectionLimits) -> None:
    """Run `app` on uvicorn with `limits` on the bound `listener` until interrupted."""
    import uvicorn

    config = uvicorn.Config(
        app, log_level="warning", http=guarded_protocol(limits), timeout_keep_alive=limits.keep_alive_timeout
    )
    uvicorn.Server(config).run(sockets=[listener])
