"""Small HTTP servers in background threads (the echo upstream and the JWKS server)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ports import LOOPBACK


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (as Envoy's upstream connections expect), no stderr noise."""

    protocol_version = "HTTP/1.1"
    # Replies go out in two writes: without this, Nagle + delayed ACK add ~40 ms to each.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass

    def read_body(self) -> bytes:
        """The body (by content-length, or chunked); a chunked body's trailer fields go to
        `self.trailers` (names lower-cased, in arrival order)."""
        self.trailers: list[tuple[str, str]] = []
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            body += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after the chunk
        while (line := self.rfile.readline().rstrip(b"\r\n")) != b"":
            name, _, value = line.decode("latin-1").partition(":")
            self.trailers.append((name.strip().lower(), value.strip()))
        return body

    def reply(
        self, status: int, body: bytes, content_type: str = "application/json", close: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        if close:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    # A listen backlog of 128 instead of socketserver's 5: requests released together (they
    # waited for keys) and several pools' fetches open their connections at the same
    # instant, and SYNs dropped by a full backlog are retried only after 1 s — past Envoy's
    # connect timeout (Envoy then answers 503 itself).
    request_queue_size = 128
    daemon_threads = True


class BackgroundServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving from a daemon thread until stop()."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0):
        self.httpd = _Server((LOOPBACK, port), handler)
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
