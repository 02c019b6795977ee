"""Traffic that keeps flowing while a test changes Envoy underneath it (configuration pushes,
bad pushes, restarts): a few client threads, each sending one request at a time on a new
connection, recording what every exchange gave and when.

A new connection per request means every request meets the listener in force when it
connects, so an exchange can be checked against the configurations in force between the
instant it was sent and the instant its answer came back."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from dataclasses import dataclass

from .ports import LOOPBACK

DECISION_HEADER = "x-cognito-authorizer-decision"


@dataclass(frozen=True)
class Probe:
    """One kind of request the load sends: a name for reports, a path, headers."""

    kind: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Exchange:
    probe: Probe
    sent: float  # time.monotonic() before connecting
    done: float  # after the answer was read (or the error raised)
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str | None
    # What reached the upstream (from the echo of a 200): the decision header in report
    # mode, and the request headers whose names the caller asked about.
    decision: str | None
    upstream_headers: frozenset[str]


class Load:
    """`with Load(port, probes, watch=names) as load:` sends the probes round-robin from
    `threads` threads until the block ends; `load.exchanges` is every exchange, in the
    order they finished. `watch`: header names to look for in what reached the upstream."""

    def __init__(
        self,
        port: int,
        probes: list[Probe],
        watch: tuple[str, ...] = (),
        threads: int = 4,
        timeout: float = 10.0,
    ):
        self.port = port
        self.watch = watch
        self.timeout = timeout
        self._probes = itertools.cycle(probes)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.exchanges: list[Exchange] = []

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                probe = next(self._probes)
            exchange = self._send(probe)
            with self._lock:
                self.exchanges.append(exchange)

    def _send(self, probe: Probe) -> Exchange:
        sent = time.monotonic()
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout)
        try:
            conn.putrequest("GET", probe.path, skip_accept_encoding=True)
            for name, value in probe.headers:
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            return Exchange(probe, sent, time.monotonic(), None, repr(e), None, frozenset())
        finally:
            conn.close()
        decision, seen = None, frozenset()
        if resp.status == 200:
            echoed = json.loads(body).get("headers", {})
            decision = echoed.get(DECISION_HEADER)
            seen = frozenset(name for name in self.watch if name in echoed)
        return Exchange(probe, sent, time.monotonic(), resp.status, None, decision, seen)
