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
