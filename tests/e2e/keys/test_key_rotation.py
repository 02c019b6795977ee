"""Rotation: the pool rotates its signing key the way Cognito does (publish the
new key next to the old one, sign with the new one, later withdraw the old one), seen end
to end with the JWKS server's fetch count at every step.

test_key_loading covers "a new kid is picked up by one refetch" and test_key_refresh "a
refresh that drops a key refuses tokens cached with it"; here is the whole rotation as one
story with exact counts, proof that the old token really was answered from the cache before
the drop, and a kid whose key material changes under the same name."""

from __future__ import annotations

import time

from support import tokens as tk
from support.assertions import assert_allowed, assert_invalid
from support.authorizer_config import TEST_POOL, jwks_path, self_minted_only_config
from support.key_lifecycle import (
    IDLE_TICK,
    SLACK,
    fetches_since,
    id_token,
    wait_for_answered_fetch,
)
from support.scenarios import bearer
from support.polling import wait_until

PATH = jwks_path(TEST_POOL)
REFRESH = 2
# Long enough that the only unknown-kid refetch of the test is the one for key B: the
# fetch count of every step is then exact (refreshes aside, which are counted separately).
MIN_REFETCH = 30


def _request_on_worker(envoy, token: str):
    """(worker that took the connection, response) for one request on a fresh connection."""
    before = envoy.worker_connections()
    resp = envoy.request("/x", bearer(token))
    after = envoy.worker_connections()
    return next(w for w in after if after[w] != before.get(w, 0)), resp


def _until_every_worker_refuses(envoy, token: str, upstream, workers, timeout: float):
    """Sends `token` until each of `workers` has refused it (401 invalid); returns the time
    each worker last accepted it (None: never). A worker that accepts it again after having
    refused it fails the test."""
    last_accepted = dict.fromkeys(workers)
    refused: set[str] = set()
    deadline = time.monotonic() + timeout
    while not refused >= set(workers):
        assert time.monotonic() < deadline, f"still accepted after {timeout} s: {last_accepted}"
        upstream.clear()
        worker, resp = _request_on_worker(envoy, token)
        if resp.status == 200:
            assert worker not in refused, f"{worker} accepted the token again after refusing it"
            last_accepted[worker] = time.monotonic()
        else:
            assert_invalid(resp, upstream)
            refused.add(worker)
    return last_accepted


def test_rotation_new_kid_accepted_by_one_refetch_then_withdrawn_key_refused_even_from_cache(
    start_envoy, jwks, upstream, signing_key
):
    key_a, key_b = signing_key, tk.SigningKey.generate("rotation-key-b")
    envoy = start_envoy(
        self_minted_only_config(
            jwks_refresh_seconds=REFRESH, jwks_min_refetch_seconds=MIN_REFETCH
        )
    )
    jwks.wait_for_hits(1, path=PATH)
    workers_before = envoy.worker_connections()

    # 1. Key A only. The same token A, sent 8 times on fresh connections: each worker
    # verifies it once, then answers it from its cache.
    token_a = id_token(key_a)
    before = envoy.counters()
    for _ in range(8):
        upstream.clear()
        assert_allowed(envoy.request("/x", bearer(token_a)), upstream)
    served_by = {
        w: n - workers_before.get(w, 0)
        for w, n in envoy.worker_connections().items()
        if n > workers_before.get(w, 0)
    }
    after = envoy.counters()
    misses = after["cache_miss"] - before["cache_miss"]
    hits = after["cache_hit"] - before["cache_hit"]
    assert misses == len(served_by) and hits == 8 - misses, (served_by, misses, hits)

    # 2. The pool publishes B next to A. A token signed by B is accepted at once: its
    # unknown kid triggers exactly one fetch, well before the next refresh would.
    jwks.serve(tk.jwks(key_a, key_b))
    fetches_before_b = jwks.hits(PATH)
    token_b = id_token(key_b)
    sent_b = time.monotonic()
    upstream.clear()
    resp = envoy.request("/x", bearer(token_b))
    assert_allowed(resp, upstream)
    new = fetches_since(jwks, sent_b, PATH)
    assert jwks.hits(PATH) == fetches_before_b + 1, jwks.fetches(PATH)
    assert len(new) == 1 and new[0].answered_at is not None, new
    assert resp.elapsed < 1.0, f"waited {resp.elapsed:.2f} s for a new key"
    assert envoy.counter("jwks_refetch_unknown_kid") == 1
    # A is still trusted, and still served from the caches.
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(token_a)), upstream)
    wait_until(lambda: envoy.pool_counter("test", "keys") == 2, 3, "keys gauge = 2")

    # 3. The pool withdraws A. After the next refresh, token A is refused everywhere,
    # including by the workers that had it in their caches (the entry died with the key),
    # and so is a token A never seen before; B keeps working. No refetch for A's kid
    # (MIN_REFETCH has not passed): the only fetches are refreshes.
    jwks.serve(tk.jwks(key_b))
    withdrawn = time.monotonic()
    refresh = wait_for_answered_fetch(jwks, withdrawn, REFRESH + IDLE_TICK + 2 * SLACK, PATH)
    # README: at once on the worker that fetched, within a second (its next tick) on the
    # others, every worker that had token A in its cache refuses it.
    last_accepted = _until_every_worker_refuses(envoy, token_a, upstream, served_by, 10)
    lag = max((t - refresh.answered_at for t in last_accepted.values() if t), default=0.0)
    assert lag <= IDLE_TICK + SLACK, f"token A accepted {lag:.2f} s after the refresh"
    cache_hits_before = envoy.counter("cache_hit")
    for token in (token_a, id_token(key_a)):
        upstream.clear()
        assert_invalid(envoy.request("/x", bearer(token)), upstream)
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(token_b)), upstream)
    after = envoy.counters()
    # Every refusal of A was decided afresh (no cached answer survived the withdrawal);
    # the one B request may be a cache hit.
    assert after["cache_hit"] - cache_hits_before <= 1
    assert after["jwks_refetch_unknown_kid"] == 1
    assert envoy.pool_counter("test", "keys") == 1
    since_withdrawal = time.monotonic() - withdrawn
    refreshes = len(fetches_since(jwks, withdrawn, PATH))
    assert 1 <= refreshes <= since_withdrawal / REFRESH + 1, (refreshes, since_withdrawal)
    per_worker = {w: t and round(t - refresh.answered_at, 2) for w, t in last_accepted.items()}
    print(
        f"[measure] rotation: first fetch 1; new kid B: +{len(new)} fetch, answered in "
        f"{resp.elapsed:.3f} s; withdrawal: {refreshes} refresh fetch(es) in "
        f"{since_withdrawal:.1f} s, token A last accepted {lag:.2f} s after the refresh "
        f"(per worker {per_worker}); "
        f"total fetches {jwks.hits(PATH)}; workers served {served_by}"
    )


def test_kid_whose_key_material_changes_refuses_tokens_cached_with_the_old_material(
    start_envoy, jwks, upstream
):
    """A JWKS may reuse a kid for new material (Cognito does not, other issuers may): the
    cache remembers which key verified a token, not just its kid."""
    old = tk.SigningKey.generate("reused-kid")
    new = tk.SigningKey.generate("reused-kid")
    jwks.serve(tk.jwks(old))
    envoy = start_envoy(self_minted_only_config(jwks_refresh_seconds=1))
    token_old = id_token(old)
    for _ in range(6):
        upstream.clear()
        assert_allowed(envoy.request("/x", bearer(token_old)), upstream)
    assert envoy.counter("cache_hit") >= 4

    served_by = set(envoy.worker_connections())
    jwks.serve(tk.jwks(new))
    switched = time.monotonic()
    refresh = wait_for_answered_fetch(jwks, switched, 1 + IDLE_TICK + 2 * SLACK, PATH)
    last_accepted = _until_every_worker_refuses(envoy, token_old, upstream, served_by, 10)
    lag = max((t - refresh.answered_at for t in last_accepted.values() if t), default=0.0)
    assert lag <= IDLE_TICK + SLACK, f"accepted {lag:.2f} s after the refresh"
    print(f"[measure] reused kid: old material last accepted {lag:.2f} s after the refresh; "
          f"fetches {jwks.hits(PATH)}")
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(id_token(new))), upstream)
    # Same kid: the kid is known, so no unknown-kid refetch ever happened.
    assert envoy.counter("jwks_refetch_unknown_kid") == 0


def test_new_kid_accepted_on_every_worker_right_after_the_refetch_that_found_it(
    start_envoy, jwks, upstream, signing_key
):
    """The refetch that found key B was made by one VM and published in shared data; a
    token B on another worker right after must not be refused (README: the others pick the
    published set up "at once when a request needs it"). No refresh happens during the
    test (3600 s), and the refetch rate limit (30 s) allows that one refetch only."""
    key_b = tk.SigningKey.generate("rotation-key-b")
    envoy = start_envoy(self_minted_only_config(jwks_min_refetch_seconds=MIN_REFETCH))
    first = wait_for_answered_fetch(jwks, 0, 5, PATH)
    # Every VM has taken key A from shared data on a tick (a VM without any keys reads
    # shared data at once, which would hide the window), and served a token A.
    time.sleep(max(0.0, first.answered_at + IDLE_TICK + SLACK - time.monotonic()))
    for _ in range(6):
        upstream.clear()
        assert_allowed(envoy.request("/x", bearer(id_token(signing_key))), upstream)
    jwks.serve(tk.jwks(signing_key, key_b))
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(id_token(key_b))), upstream)
    found_at = time.monotonic()

    outcomes = []  # (seconds after the first B was accepted, worker, status)
    # For the 1.2 s after it (every VM ticks once a second): on every worker.
    while len(outcomes) < 16 or time.monotonic() - found_at < IDLE_TICK + 0.2:
        worker, resp = _request_on_worker(envoy, id_token(key_b))  # fresh: never cached
        outcomes.append((round(time.monotonic() - found_at, 3), worker, resp.status))
    refused = [o for o in outcomes if o[2] != 200]
    workers = {w for _, w, _ in outcomes}
    print(f"[measure] token B right after its refetch: {len(refused)} of {len(outcomes)} "
          f"refused, on {sorted({w for _, w, _ in refused})}, from {refused[:1]} to "
          f"{refused[-1:]} s after the first B was accepted; fetches {jwks.hits(PATH)}")
    assert len(workers) >= 2, outcomes
    assert jwks.hits(PATH) == 2
    assert not refused, (
        f"token B refused 401 on another worker after the refetch that found its key: "
        f"{len(refused)} of {len(outcomes)} requests, first {refused[0]}, last {refused[-1]}"
    )
