"""A server on loopback that answers every request with the same raw bytes, as a broken gateway or
a dying connection would: what a well-behaved server (the sandbox) never sends."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

GATEWAY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
TIMEOUT_PAGE = b"<html><head><title>504 Gateway Time-out</title></head><body><h1>504 Time-out</h1></body></html>"


def answer(status: str, body: bytes, content_type: str = "text/html", *, length: int | None = None) -> bytes:
    """Raw bytes of an HTTP/1.1 answer; ``length`` may claim more than the body holds (a cut body)."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


ANSWERS: dict[str, bytes | None] = {
    "502 page": answer("502 Bad Gateway", GATEWAY_PAGE),
    "504": answer("504 Gateway Time-out", TIMEOUT_PAGE),
    "cut body": answer("200 OK", b'{"task_ids": ["task_', "application/json", length=200),
    "time-out": None,
}
"""What each failure sends; None sends nothing and holds the connection until the client gives up."""


class RawServer:
    """``with RawServer(ANSWERS["504"]) as server:``, then send requests to ``server.url``; ``requests``
    counts the requests that arrived."""

    def __init__(self, raw: bytes | None, *, hold: float = 5.0) -> None:
        self.raw = raw
        self.hold = hold
        self.requests = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(2)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                received += chunk
            self.requests += 1
            if self.raw is None:
                deadline = time.monotonic() + self.hold
                while time.monotonic() < deadline and not self._stop.is_set():
                    time.sleep(0.05)
                return
            connection.sendall(self.raw)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()
