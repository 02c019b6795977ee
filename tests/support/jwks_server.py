"""A JWKS endpoint the tests control: which keys it serves, or that it fails, answers
garbage, answers late, or holds every answer until the test releases it. It counts the
fetches (per path) so tests can check the filter's refetch rate limit.

It answers any path ending in `/.well-known/jwks.json` (like moto, whatever the Host), so
several pools can share it, each with its own jwks_uri path; `set(path, ...)` gives one path
an answer of its own (several pools answered differently in one refresh cycle).

`JwksServer(keep_alive=False)` closes every connection after its answer, so that after
stop() the next fetch meets a refused connection (with keep-alive, a connection Envoy kept
open would still be answered)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from .polling import wait_until
from .servers import BackgroundServer, QuietHandler

JWKS_SUFFIX = "/.well-known/jwks.json"
# A held answer is released at the latest after this long, so no thread outlives a test.
MAX_HOLD_SECONDS = 30.0


@dataclass
class Fetch:
    path: str
    host: str | None
    received_at: float  # time.monotonic()
    answered_at: float | None = None


@dataclass
class _Behaviour:
    status: int = 200
    body: bytes = b'{"keys":[]}'
    delay: float = 0.0
    gate: threading.Event = field(default_factory=lambda: _open_gate())


def _open_gate() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


class JwksServer:
    """`suffix`: the paths it answers (another one serves other documents, e.g. a
    revocation document, with the same controls and counts)."""

    def __init__(
        self, jwks: dict | None = None, keep_alive: bool = True, suffix: str = JWKS_SUFFIX
    ):
        self._lock = threading.Lock()
        self._behaviour = _Behaviour()
        self._per_path: dict[str, _Behaviour] = {}
        self._fetches: list[Fetch] = []
        if jwks is not None:
            self.serve(jwks)
        server = self

        class Handler(QuietHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if not path.endswith(suffix):
                    self.reply(404, b'{"message":"not found"}')
                    return
                fetch = Fetch(path, self.headers.get("host"), time.monotonic())
                with server._lock:
                    server._fetches.append(fetch)
                    behaviour = server._per_path.get(path, server._behaviour)
                behaviour.gate.wait(MAX_HOLD_SECONDS)
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                if not keep_alive:
                    self.close_connection = True
                self.reply(behaviour.status, behaviour.body, close=not keep_alive)
                fetch.answered_at = time.monotonic()

        self._server = BackgroundServer(Handler)
        self.port = self._server.port

    # --- what it answers -------------------------------------------------------------

    def serve(self, jwks: dict) -> None:
        """Answer 200 with this key set (a dict like {"keys": [...]})."""
        self._set(_Behaviour(200, json.dumps(jwks).encode()))

    def set(self, path: str, body: bytes | dict, status: int = 200) -> None:
        """Answer fetches of `path` (exactly) with `status` and `body` (a dict is JSON)."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        with self._lock:
            self._per_path[path] = _Behaviour(status, raw)

    def fail(self, status: int = 500) -> None:
        """Answer every fetch with `status` and an error body."""
        self._set(_Behaviour(status, b'{"message":"internal error"}'))

    def serve_raw(self, body: bytes, status: int = 200) -> None:
        """Answer with arbitrary bytes (malformed key sets)."""
        self._set(_Behaviour(status, body))

    def delay_answers(self, seconds: float) -> None:
        """Keep answering as now, but `seconds` late."""
        with self._lock:
            self._behaviour.delay = seconds

    def hold_answers(self) -> None:
        """Keep answering as now, but only after release() (or MAX_HOLD_SECONDS)."""
        with self._lock:
            self._behaviour.gate = threading.Event()

    def release(self) -> None:
        with self._lock:
            self._behaviour.gate.set()

    def _set(self, behaviour: _Behaviour) -> None:
        with self._lock:
            old, self._behaviour = self._behaviour, behaviour
        old.gate.set()  # never strand a held fetch

    def reset(self, jwks: dict) -> None:
        """Serve `jwks` promptly and forget the fetches seen so far."""
        self.serve(jwks)
        with self._lock:
            self._fetches.clear()

    # --- what it saw -----------------------------------------------------------------

    def fetches(self, path: str | None = None) -> list[Fetch]:
        with self._lock:
            return [f for f in self._fetches if path is None or f.path == path]

    def hits(self, path: str | None = None) -> int:
        return len(self.fetches(path))

    def wait_for_hits(self, count: int, timeout: float = 10.0, path: str | None = None) -> None:
        wait_until(lambda: self.hits(path) >= count, timeout, f"{count} JWKS fetch(es)")

    def stop(self) -> None:
        self.release()
        self._server.stop()
