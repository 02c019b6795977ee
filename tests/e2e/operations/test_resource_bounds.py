"""Memory stays bounded under a flood of distinct tokens.

Envoy (2 workers, default `token_cache_size` 1024 per worker VM) gets, for FLOOD_SECONDS
(default 20; `FLOOD_SECONDS=60` for the long run by hand), requests from 8 threads on
keep-alive connections cycling through 2,000 distinct valid tokens (twice the cache size:
the LRU must evict), 2,000 distinct forged ones (each a valid token with a flipped
signature byte: a full verification each) and 500 distinct malformed ones. Envoy's resident
memory (VmRSS of /proc/<pid>/status) is read after a warm-up, every second during the flood
and after it; growth must stay under 64 MiB. Envoy must stay up and still answer right.
The upstream is a minimal one with TCP_NODELAY (see CountingUpstream)."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from support import tokens as tk
from support.assertions import CHALLENGE_INVALID, UNAUTHORIZED
from support.authorizer_config import (
    CLAIM_HEADERS,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    self_minted_pool,
)
from support.client import KeepAliveClient
from support.envoy import authorizer_bootstrap
from support.servers import BackgroundServer, QuietHandler

FLOOD_SECONDS = float(os.environ.get("FLOOD_SECONDS", "20"))
THREADS = 8
VALID, FORGED, MALFORMED = 2000, 2000, 500
MAX_GROWTH = 64 * 1024 * 1024


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class CountingUpstream:
    """A minimal upstream with TCP_NODELAY (the shared echo upstream writes its answer in two
    segments, and Nagle + delayed ACK then cost ~40 ms per 200: a flood would measure that).
    Counts what reaches it and keeps the last `x-cognito-sub`."""

    def __init__(self):
        self.count = 0
        self.last_sub = None
        lock = threading.Lock()
        upstream = self

        class Handler(QuietHandler):
            disable_nagle_algorithm = True

            def do_GET(self):  # noqa: N802
                with lock:
                    upstream.count += 1
                    upstream.last_sub = self.headers.get("x-cognito-sub")
                self.reply(200, b'{"ok":true}')

        self._server = BackgroundServer(Handler)
        self.port = self._server.port

    def stop(self):
        self._server.stop()


@pytest.fixture(scope="module")
def fast_upstream():
    server = CountingUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def flood_envoy(bootstrap_envoys, wasm_path, jwks, fast_upstream):
    config = {"user_pools": [self_minted_pool()], "claims_to_headers": CLAIM_HEADERS}
    return bootstrap_envoys(
        authorizer_bootstrap(wasm_path, config, fast_upstream.port, {TEST_CLUSTER: jwks.port}),
        "flood",
    )


@pytest.fixture(scope="module")
def flood_tokens(signing_key) -> list[str]:
    rng = random.Random(5)
    valid = [
        tk.sign(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, f"user{i}", sub=f"s{i}"))
        for i in range(VALID)
    ]
    forged = [tk.with_flipped_signature(t) for t in valid[:FORGED]]
    malformed = [
        ".".join(tk.b64url(rng.randbytes(rng.randrange(8, 200))) for _ in range(3))
        for _ in range(MALFORMED)
    ]
    tokens = valid + forged + malformed
    rng.shuffle(tokens)
    return tokens


def test_rss_stays_bounded_under_a_flood_of_distinct_tokens(
    flood_envoy, flood_tokens, fast_upstream, signing_key, capsys
):
    envoy = flood_envoy
    client = KeepAliveClient()
    # Warm-up: every VM compiled, keys loaded, connections open, allocator settled.
    client.map(
        lambda t: client.request(envoy.port, "/flood", {"authorization": f"Bearer {t}"}),
        flood_tokens[:400],
        THREADS,
    )
    before = envoy.rss_bytes()
    counters_before = envoy.counters()
    upstream_before = fast_upstream.count
    deadline = time.monotonic() + FLOOD_SECONDS
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    samples = [before]

    def worker(index: int) -> int:
        sent = 0
        local: dict[int, int] = {}
        i = index
        while time.monotonic() < deadline:
            token = flood_tokens[i % len(flood_tokens)]
            resp = client.request(envoy.port, "/flood", {"authorization": f"Bearer {token}"})
            local[resp.status] = local.get(resp.status, 0) + 1
            i += THREADS
            sent += 1
        with lock:
            for status, n in local.items():
                statuses[status] = statuses.get(status, 0) + n
        return sent

    sampler_stop = threading.Event()

    def sampler():
        while not sampler_stop.wait(1.0):
            samples.append(envoy.rss_bytes())

    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    started = time.monotonic()
    try:
        sent = sum(client.map(worker, range(THREADS), THREADS))
    finally:
        sampler_stop.set()
        sampling.join(timeout=5)
        client.close()
    elapsed = time.monotonic() - started
    after = envoy.rss_bytes()
    counters = {k: v - counters_before.get(k, 0) for k, v in envoy.counters().items()}

    with capsys.disabled():
        print(
            f"\nflood: {sent} requests in {elapsed:.1f} s ({sent / elapsed:.0f}/s), statuses "
            f"{dict(sorted(statuses.items()))}; Envoy RSS before {_mib(before)}, peak "
            f"{_mib(max(samples))}, after {_mib(after)} (growth {_mib(after - before)}); "
            f"allowed {counters.get('allowed')}, denied_invalid {counters.get('denied_invalid')},"
            f" cache_hit {counters.get('cache_hit')}, cache_miss {counters.get('cache_miss')}"
        )

    assert set(statuses) <= {200, 401}, statuses
    assert statuses.get(200, 0) > 0 and statuses.get(401, 0) > 0, statuses
    # Exactly the valid tokens reached the upstream (warm-up included).
    assert fast_upstream.count == upstream_before + statuses[200], fast_upstream.count
    assert after - before < MAX_GROWTH, f"RSS grew by {_mib(after - before)}"
    assert max(samples) - before < MAX_GROWTH, f"RSS peaked {_mib(max(samples) - before)} above"
    # Still up, still right.
    assert envoy.process.exit_code() is None
    assert envoy.admin("/ready").status == 200
    count = fast_upstream.count
    valid = tk.sign(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, sub="after-flood"))
    resp = envoy.request("/flood", {"authorization": f"Bearer {valid}"})
    assert resp.status == 200 and fast_upstream.count == count + 1
    assert fast_upstream.last_sub == "after-flood"
    forged = tk.with_flipped_signature(valid)
    resp = envoy.request("/flood", {"authorization": f"Bearer {forged}"})
    assert resp.status == 401 and resp.body == UNAUTHORIZED
    assert resp.header("www-authenticate") == CHALLENGE_INVALID
    assert fast_upstream.count == count + 1
