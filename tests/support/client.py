"""A plain HTTP/1.1 client for the tests (http.client: sends headers exactly as given,
ignores proxy environment variables, keeps every response header)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .ports import LOOPBACK

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in arrival order
    body: bytes
    elapsed: float  # seconds from sending the request to reading the whole body

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def header(self, name: str) -> str | None:
        """The single value of `name` (None when absent; fails when repeated)."""
        values = self.header_values(name)
        assert len(values) <= 1, f"response header {name} repeated: {values}"
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def describe(self) -> str:
        """For assertion messages."""
        headers = "\n".join(f"  {k}: {v}" for k, v in self.headers)
        return f"HTTP {self.status}\n{headers}\n  body: {self.body[:600]!r}"


def request(
    port: int,
    path: str = "/",
    headers: Headers = (),
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 15.0,
) -> Response:
    """One request on a fresh connection to 127.0.0.1:`port`."""
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        started = time.monotonic()
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in items:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(
            status=resp.status,
            headers=[(k.lower(), v) for k, v in resp.getheaders()],
            body=data,
            elapsed=time.monotonic() - started,
        )
    finally:
        conn.close()


# --- many requests: keep-alive connections from a thread pool ------------------------------


class KeepAliveClient:
    """Sends many requests over persistent HTTP/1.1 connections, one per (thread, port), so
    that floods and differential runs measure Envoy rather than TCP handshakes. A
    connection Envoy closed (after a 400, say) is reopened and the request sent once more.

    Use `map(fn, items, threads)` to run `fn(item)` from a pool of threads that share this
    client; `fn` calls `request`."""

    def __init__(self, timeout: float = 15.0):
        import threading

        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []

    def _connection(self, port: int, fresh: bool = False) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(port)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=self.timeout)
            conns[port] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def request(self, port: int, path: str = "/", headers: Headers = (),
                method: str = "GET") -> Response:  # fmt: skip
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        for attempt in (0, 1):
            conn = self._connection(port, fresh=attempt > 0)
            try:
                started = time.monotonic()
                conn.putrequest(method, path, skip_accept_encoding=True)
                for name, value in items:
                    conn.putheader(name, value)
                conn.endheaders()
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                return Response(
                    status=resp.status,
                    headers=[(k.lower(), v) for k, v in resp.getheaders()],
                    body=data,
                    elapsed=time.monotonic() - started,
                )
            except (http.client.RemoteDisconnected, http.client.BadStatusLine,
                    ConnectionError, BrokenPipeError):  # fmt: skip
                conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def map(self, fn, items, threads: int = 8) -> list:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int | None, bytes]:
    """Writes `data` as it is on a fresh connection (for requests http.client refuses to
    build: CR, LF or NUL in a header value, a header of a megabyte) and reads until Envoy
    closes or answers. Returns (status of the first response, or None when the connection
    was reset or closed without one; the bytes read)."""
    import socket

    received = b""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy answered (431, 400) and closed before reading everything
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                head, sep, rest = received.partition(b"\r\n\r\n")
                if sep:
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value.strip() or 0)
                    if len(rest) >= length:
                        break
        except (ConnectionResetError, TimeoutError, OSError):
            pass
    status = None
    if received.startswith(b"HTTP/1."):
        try:
            status = int(received.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = None
    return status, received
