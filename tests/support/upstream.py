"""The API behind the authorizer: answers 200 with a JSON echo of what reached it.

Tests read the echo (or `requests`) to see which identity headers the filter added and
that forged ones were removed, and `requests` being empty proves a denial never reached
the upstream."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from .servers import BackgroundServer, QuietHandler


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]  # in arrival order, names lower-cased, duplicates kept
    # The request target exactly as it arrived: `path` is http.server's, which collapses a
    # leading `//` into `/` (gh-87389).
    raw_path: str | None = None
    # Trailer fields of a chunked body, names lower-cased, in arrival order.
    trailers: tuple[tuple[str, str], ...] = ()

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive); [] when absent."""
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def header(self, name: str) -> str | None:
        """The single value of `name`; fails when the header arrived more than once."""
        values = self.header_values(name)
        assert len(values) <= 1, f"header {name} arrived {len(values)} times: {values}"
        return values[0] if values else None


class EchoUpstream:
    """Echo server on 127.0.0.1 (`port` 0: any free port)."""

    def __init__(self, port: int = 0):
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        upstream = self

        class Handler(QuietHandler):
            def _echo(self):
                self.read_body()  # sets self.trailers
                received = ReceivedRequest(
                    method=self.command,
                    path=self.path,
                    headers=[(k.lower(), v) for k, v in self.headers.items()],
                    raw_path=_request_target(self.requestline),
                    trailers=tuple(self.trailers),
                )
                with upstream._lock:
                    upstream._requests.append(received)
                headers: dict[str, str | list[str]] = {}
                for name, value in received.headers:
                    if name in headers:  # repeated header: all its values, in order
                        previous = headers[name]
                        headers[name] = [
                            *(previous if isinstance(previous, list) else [previous]),
                            value,
                        ]
                    else:
                        headers[name] = value
                body = {"method": received.method, "path": received.path, "headers": headers}
                self.reply(200, json.dumps(body, indent=2).encode() + b"\n")

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _echo

        self._server = BackgroundServer(Handler, port)
        self.port = self._server.port

    @property
    def requests(self) -> list[ReceivedRequest]:
        """What reached the upstream since the last clear()."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def stop(self) -> None:
        self._server.stop()


def _request_target(request_line: str) -> str | None:
    """`GET /a//b HTTP/1.1` → `/a//b`."""
    parts = request_line.split(" ")
    return parts[1] if len(parts) == 3 else None
