"""JWKS outages (README "Keys"): no keys at start, then recovery without a restart; keys
loaded and then the JWKS hangs or refuses connections (stale keys until the bound, then
503); malformed refreshes of every other kind; slow answers, within and past the timeout.
Every test counts what the JWKS server saw and bounds it by the backoff the filter promises
(1 s doubling, jitter over [delay/2, delay]).

Not repeated here (test_key_loading, test_key_refresh): 503 at start for 500 / garbage /
empty body / no answer / refused connection, a slow *first* fetch, a refresh that drops a
key."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from support import tokens as tk
from support.assertions import assert_allowed, assert_invalid, assert_unavailable
from support.authorizer_config import (
    CLAIM_HEADERS,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_POOL,
    jwks_path,
    jwks_uri,
    self_minted_only_config,
    self_minted_pool,
)
from support.key_lifecycle import (
    IDLE_TICK,
    SLACK,
    fetches_since,
    id_token,
    max_backoff,
    max_failed_fetches_within,
    min_backoff,
    wait_for_answered_fetch,
)
from support.scenarios import bearer
from support.jwks_server import JwksServer
from support.polling import wait_until

PATH = jwks_path(TEST_POOL)


# --- 1. no keys at start, then the JWKS recovers -------------------------------------------


def test_outage_from_start_gives_503_with_retry_after_then_same_token_200_after_recovery(
    start_envoy, jwks, upstream, signing_key
):
    jwks.fail(500)
    envoy = start_envoy(self_minted_only_config(jwks_timeout_ms=500))
    jwks.wait_for_hits(1, path=PATH)
    token = id_token(signing_key)

    retry_afters: list[int] = []
    outage_started = time.monotonic()
    while time.monotonic() - outage_started < 2.5:
        upstream.clear()
        resp = envoy.request("/x", bearer(token))
        assert_unavailable(resp, upstream)
        retry_afters.append(int(resp.header("retry-after")))
        time.sleep(0.1)

    recovered_at = time.monotonic()
    jwks.serve(tk.jwks(signing_key))
    outage = [f for f in jwks.fetches(PATH) if f.received_at < recovered_at]
    wait_until(lambda: all(f.answered_at for f in outage), 2, "the failed fetches answered")
    # No Envoy restart: the same token is let through once the next retry succeeds, no
    # later than the last retry-after said (plus the tick that starts the retry).
    bound = retry_afters[-1] + IDLE_TICK + 2 * SLACK

    def allowed():
        upstream.clear()
        resp = envoy.request("/x", bearer(token))
        if resp.status == 200:
            return resp
        assert_unavailable(resp, upstream)
        retry_afters.append(int(resp.header("retry-after")))
        return None

    resp = wait_until(allowed, bound, f"200 within {bound:.1f} s of the recovery", 0.05)
    recovery = time.monotonic() - recovered_at
    assert_allowed(resp, upstream)

    # Fetches during the outage: bounded by the backoff, each one waited for.
    duration = recovered_at - outage[0].received_at
    assert 2 <= len(outage) <= max_failed_fetches_within(duration), (len(outage), duration)
    first_ok = fetches_since(jwks, recovered_at, PATH)[0]
    attempts = [*outage, first_ok]
    pairs = list(zip(attempts, attempts[1:]))
    for n, (prev, nxt) in enumerate(pairs, start=1):
        gap = nxt.received_at - prev.answered_at
        assert min_backoff(n) - 0.05 <= gap <= max_backoff(n) + IDLE_TICK + SLACK, (
            f"retry {n} came {gap:.2f} s after failure {n}"
        )
    # retry-after never promised more than the backoff then running.
    assert all(1 <= r <= max_backoff(len(outage)) for r in retry_afters), retry_afters
    counters = envoy.counters()
    assert counters["jwks_fetch_failed"] == len(outage)
    assert counters["jwks_fetch_ok"] == 1
    assert counters["unavailable"] == len(retry_afters)
    assert counters["allowed"] == 1
    assert jwks.hits(PATH) == len(outage) + 1
    print(
        f"[measure] outage at start: {len(outage)} failed fetches in {duration:.2f} s "
        f"(gaps {[round(b.received_at - a.answered_at, 2) for a, b in pairs]}), "
        f"retry-after seen {sorted(set(retry_afters))}, 200 {recovery:.2f} s after recovery"
    )


# --- 2. keys loaded, then the JWKS goes away -------------------------------------------------

REFRESH, MAX_STALE, TIMEOUT_MS = 1, 2, 500


def _hang(jwks_server, scripted):
    jwks_server.delay_answers(TIMEOUT_MS / 1000 + 1.0)  # answers after the callout timed out


def _refuse(jwks_server, scripted):
    scripted.stop()  # nothing listens any more: connection refused


def _fail(jwks_server, scripted):
    jwks_server.fail(500)


@pytest.mark.parametrize(
    "break_jwks", [_hang, _refuse, _fail],
    ids=["hangs-past-timeout", "refuses-connections", "answers-500"],
)  # fmt: skip
def test_outage_after_keys_loaded_serves_stale_keys_until_refresh_plus_max_stale_then_503(
    start_envoy, jwks, upstream, signing_key, break_jwks
):
    scripted = JwksServer(keep_alive=False)
    try:
        scripted.set(PATH, tk.jwks(signing_key))
        server = scripted if break_jwks is _refuse else jwks
        envoy = start_envoy(
            self_minted_only_config(
                jwks_refresh_seconds=REFRESH,
                jwks_max_stale_seconds=MAX_STALE,
                jwks_timeout_ms=TIMEOUT_MS,
            ),
            clusters={TEST_CLUSTER: server.port},
        )
        cached = id_token(signing_key)
        assert envoy.request("/x", bearer(cached)).status == 200
        # Break it right after a successful refresh: the keys were fetched at `last_ok`.
        last_ok = wait_for_answered_fetch(server, time.monotonic(), 5, PATH).answered_at
        break_jwks(jwks, scripted)
        before = envoy.counters()
        usable_until = last_ok + REFRESH + MAX_STALE

        outcomes = []  # (sent, answered, token kind, status)
        while time.monotonic() < usable_until + 1.5:
            for kind, token in (("fresh", id_token(signing_key)), ("cached", cached)):
                upstream.clear()
                sent = time.monotonic()
                resp = envoy.request("/x", bearer(token))
                outcomes.append((sent, time.monotonic(), kind, resp.status))
                if sent >= usable_until + SLACK:
                    assert_unavailable(resp, upstream)
                elif time.monotonic() <= usable_until - SLACK:
                    assert resp.status == 200, (kind, sent - last_ok, resp.describe())
            time.sleep(0.05)

        statuses = {s for *_, s in outcomes}
        assert statuses <= {200, 503}, outcomes
        after = envoy.counters()
        stale_ok = [
            o for o in outcomes
            if o[2] == "fresh" and o[3] == 200 and o[0] >= last_ok + REFRESH + SLACK
        ]  # fmt: skip
        served_stale = after["stale_keys_served"] - before["stale_keys_served"]
        verified = after["cache_miss"] - before["cache_miss"]
        assert len(stale_ok) >= 3, outcomes
        # Each verification with keys past their refresh time counts: every fresh token
        # let through in the stale window, at most every request not answered from a
        # cache ("cached" is cached only by the worker that first saw it).
        assert len(stale_ok) <= served_stale <= verified, (served_stale, len(stale_ok), verified)
        failed = after["jwks_fetch_failed"] - before["jwks_fetch_failed"]
        duration = time.monotonic() - (last_ok + REFRESH)
        assert 1 <= failed <= max_failed_fetches_within(duration), (failed, duration)
        assert after["jwks_fetch_ok"] == before["jwks_fetch_ok"]
        if server is jwks:
            attempts = fetches_since(jwks, last_ok, PATH)
            assert failed <= len(attempts) <= failed + 1, (failed, len(attempts))
        first_503 = min((o[0] for o in outcomes if o[3] == 503), default=None)
        assert first_503 is not None
        last_200 = max(o[1] for o in outcomes if o[3] == 200)
        print(
            f"[measure] outage after load ({break_jwks.__name__[1:]}): last 200 "
            f"{last_200 - last_ok:.2f} s and first 503 {first_503 - last_ok:.2f} s after the "
            f"last good fetch (bound {REFRESH + MAX_STALE} s); {failed} failed fetches, "
            f"JWKS server hits since {len(fetches_since(server, last_ok, PATH))}; "
            f"stale_keys_served +{served_stale}"
        )
    finally:
        scripted.stop()


def test_healthy_jwks_with_zero_max_stale_never_gives_503_across_refreshes(
    start_envoy, jwks, upstream, signing_key
):
    """`jwks_max_stale_seconds: 0` (allowed: 0 to 30 days) means "no stale keys once a
    refresh fails", not "503 between the refresh time and the refresh": no fetch fails
    here, so no request may get 503 (README "Behaviour": 503 when keys are not obtainable)."""
    envoy = start_envoy(self_minted_only_config(jwks_refresh_seconds=1, jwks_max_stale_seconds=0))
    wait_for_answered_fetch(jwks, 0, 5, PATH)
    started = time.monotonic()
    outcomes = []
    while time.monotonic() - started < 3.5:
        upstream.clear()
        resp = envoy.request("/x", bearer(id_token(signing_key)))
        outcomes.append(
            (round(time.monotonic() - started, 2), resp.status, resp.header("retry-after"))
        )
        time.sleep(0.02)
    refused = [o for o in outcomes if o[1] != 200]
    fetches = len(fetches_since(jwks, started, PATH))
    print(f"[measure] max_stale 0, healthy JWKS: {len(refused)} of {len(outcomes)} requests "
          f"not 200 (first {refused[:3]}); {fetches} refreshes in 3.5 s")
    assert envoy.counter("jwks_fetch_failed") == 0
    assert 1 <= fetches <= 3.5 / 1 + 1, fetches
    assert not refused, f"{len(refused)} of {len(outcomes)} requests refused: {refused[:5]}"


# --- 3. malformed refreshes (each in its own pool, all in one refresh cycle) ----------------


def _rsa_jwk(kid: str, bits: int) -> dict:
    key = tk.SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=bits))
    return key.jwk()


def _p521_jwk(kid: str) -> dict:
    numbers = ec.generate_private_key(ec.SECP521R1()).public_key().public_numbers()

    def coord(v: int) -> str:
        return base64.urlsafe_b64encode(v.to_bytes(66, "big")).rstrip(b"=").decode()

    return {"kty": "EC", "crv": "P-521", "kid": kid, "x": coord(numbers.x), "y": coord(numbers.y),
            "use": "sig", "alg": "ES512"}  # fmt: skip


MAX_JWKS_BYTES = 4096


def _bad_bodies(good_key: tk.SigningKey) -> dict[str, tuple[int, bytes]]:
    """Refresh answers that must not replace the key set. None lists the good key with
    its real material, so a token it signed is refused if one of them were installed."""
    other = tk.SigningKey.generate("other-key").jwk()
    dumps = lambda o: json.dumps(o).encode()  # noqa: E731
    return {
        # A perfectly good key set, but bigger than max_jwks_bytes.
        "oversized": (200, dumps({"keys": [other], "padding": "x" * MAX_JWKS_BYTES})),
        # The only key is RSA-1024 (under the 2048-bit floor), under the good key's kid.
        "rsa-1024-only": (200, dumps({"keys": [_rsa_jwk(good_key.kid, 1024)]})),
        # Two keys with one kid: both skipped, nothing usable left.
        "duplicate-kid-only": (200, dumps({"keys": [other, {**other}]})),
        # An encryption key is not a signing key.
        "use-enc-only": (200, dumps({"keys": [{**other, "use": "enc"}]})),
        # An unsupported curve.
        "p521-only": (200, dumps({"keys": [_p521_jwk("p521")]})),
        # A JWK whose alg is symmetric.
        "hs256-alg-only": (200, dumps({"keys": [{**other, "alg": "HS256"}]})),
        # A valid key set under a non-200 status.
        "http-404-valid-body": (404, dumps({"keys": [other]})),
        # Cut off mid-way.
        "truncated": (200, dumps(tk.jwks(good_key))[:100]),
        "json-array": (200, b"[]"),
        # Not JSON at all (a proxy's error page under a 200).
        "html": (200, b"<html>oops</html>"),
        # A well-formed but empty key set.
        "empty-key-set": (200, dumps({"keys": []})),
        # The only key is symmetric.
        "oct-only": (200, dumps({"keys": [{"kty": "oct", "kid": good_key.kid, "k": "c2VjcmV0"}]})),
    }


VARIANTS = [
    "oversized", "rsa-1024-only", "duplicate-kid-only", "use-enc-only", "p521-only",
    "hs256-alg-only", "http-404-valid-body", "truncated", "json-array", "html", "empty-key-set",
    "oct-only",
]  # fmt: skip (the keys of _bad_bodies, in order)


def _variant_pool(variant: str) -> dict:
    pool_id = f"us-east-1_Bad{VARIANTS.index(variant)}"
    return self_minted_pool(
        name=f"bad{VARIANTS.index(variant)}",
        user_pool_id=pool_id,
        issuer=tk.cognito_issuer(pool_id),
        jwks_uri=jwks_uri(pool_id),
    )


@pytest.fixture(scope="module")
def malformed_refreshes(module_envoys, signing_key):
    """One Envoy with a pool per variant, all fetched from one scripted server; every pool
    loads the good key set, then each pool's JWKS answers its bad body from the next
    refresh on. Returns (envoy, server, counters before the switch, time of the switch)."""
    server = JwksServer(keep_alive=False)
    pools = [_variant_pool(v) for v in VARIANTS]
    for pool in pools:
        server.set(jwks_path(pool["user_pool_id"]), tk.jwks(signing_key))
    try:
        envoy = module_envoys(
            {
                "user_pools": pools,
                "claims_to_headers": CLAIM_HEADERS,
                "jwks_refresh_seconds": 1,
                "jwks_max_stale_seconds": 30,
                "max_jwks_bytes": MAX_JWKS_BYTES,
            },
            {TEST_CLUSTER: server.port},
            name="malformed",
        )
        # Counted by the filter, not just received by the server: a fetch the server has
        # seen may not be counted yet, and would then count after the snapshot.
        wait_until(
            lambda: all(envoy._filter_metrics().get(f"pool.{p['name']}.jwks_fetch_ok", 0) >= 1
                        for p in pools),
            10,
            "every pool's first keys",
        )  # fmt: skip
        before = envoy._filter_metrics()
        switched = time.monotonic()
        for variant, (status, body) in _bad_bodies(signing_key).items():
            server.set(jwks_path(_variant_pool(variant)["user_pool_id"]), body, status)

        def all_failed():
            m = envoy._filter_metrics()
            return all(
                m.get(f"pool.{p['name']}.jwks_fetch_failed", 0)
                > before.get(f"pool.{p['name']}.jwks_fetch_failed", 0)
                for p in pools
            )

        wait_until(all_failed, 1 + IDLE_TICK + 4 * SLACK + 2, "a failed refresh in every pool")
        yield envoy, server, before, switched
    finally:
        server.stop()


@pytest.mark.parametrize("variant", VARIANTS)
def test_malformed_refresh_keeps_previous_keys(
    malformed_refreshes, upstream, signing_key, variant
):
    envoy, server, before, switched = malformed_refreshes
    pool = _variant_pool(variant)
    name, issuer = pool["name"], pool["issuer"]
    # payload: {"iss": <this pool's issuer>, "aud": TEST_CLIENT, "token_use": "id", ...}
    token = tk.sign(signing_key, tk.id_claims(issuer, TEST_CLIENT))
    upstream.clear()
    resp = envoy.request("/x", bearer(token))
    assert_allowed(resp, upstream)
    assert resp.status == 200
    m = envoy._filter_metrics()
    assert m[f"pool.{name}.jwks_fetch_failed"] > before[f"pool.{name}.jwks_fetch_failed"]
    assert m[f"pool.{name}.jwks_fetch_ok"] == before[f"pool.{name}.jwks_fetch_ok"]
    assert m[f"pool.{name}.keys"] == 1
    bad = fetches_since(server, switched, jwks_path(pool["user_pool_id"]))
    assert 1 <= len(bad) <= max_failed_fetches_within(time.monotonic() - switched), len(bad)
    print(f"[measure] malformed {variant}: {len(bad)} bad fetch(es), previous keys kept")


# --- 4. slow answers -------------------------------------------------------------------------


def test_refresh_slower_than_timeout_counts_as_failed_and_requests_do_not_wait_for_it(
    start_envoy, jwks, upstream, signing_key
):
    envoy = start_envoy(
        self_minted_only_config(
            jwks_refresh_seconds=1, jwks_max_stale_seconds=30, jwks_timeout_ms=500
        )
    )
    jwks.wait_for_hits(1, path=PATH)
    jwks.delay_answers(1.2)
    slowed = time.monotonic()
    before = envoy.counters()
    # While the slow refresh is in flight, requests are answered with the current keys.
    slow = wait_until(
        lambda: next((f for f in fetches_since(jwks, slowed, PATH)), None), 4, "a slow refresh"
    )
    upstream.clear()
    resp = envoy.request("/x", bearer(id_token(signing_key)))
    assert_allowed(resp, upstream)
    assert resp.elapsed < 0.4, f"a request waited {resp.elapsed:.2f} s for a refresh"
    wait_until(
        lambda: envoy.counter("jwks_fetch_failed") > before["jwks_fetch_failed"], 3,
        "the slow refresh to count as failed",
    )  # fmt: skip
    # The late answer (a valid key set) comes after the timeout: Envoy has given up on
    # it (the server's write may even fail), and it is not counted as a success.
    time.sleep(max(0.0, slow.received_at + 1.2 + 0.3 - time.monotonic()))
    assert envoy.counter("jwks_fetch_ok") == before["jwks_fetch_ok"]
    took = 1.2
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(id_token(signing_key))), upstream)
    print(f"[measure] slow refresh: answer {took:.2f} s late (timeout 0.5 s), counted failed; "
          f"fetches since slowing {len(fetches_since(jwks, slowed, PATH))}")


@pytest.fixture(scope="module")
def refetch_envoy(module_envoys, jwks, signing_key):
    """No refreshes during the module (3600 s): every fetch after the first is an
    unknown-kid refetch. (Module fixtures start before the per-test reset of the JWKS
    server: reset it here, or the first fetch meets the previous test's behaviour.)"""
    jwks.reset(tk.jwks(signing_key))
    envoy = module_envoys(
        self_minted_only_config(
            jwks_timeout_ms=1000, jwks_min_refetch_seconds=2, jwks_refresh_seconds=3600
        ),
        {TEST_CLUSTER: jwks.port},
        name="refetch",
    )
    wait_until(lambda: envoy.counter("jwks_fetch_ok") == 1, 5, "the first keys")
    return envoy


def _wait_refetch_window(envoy_last_refetch: list[float]) -> None:
    """The previous test's refetch may be < 2 s old: wait out jwks_min_refetch_seconds."""
    if envoy_last_refetch:
        time.sleep(max(0.0, envoy_last_refetch[-1] + 2.2 - time.monotonic()))


_REFETCHES: list[float] = []


def _request_with_new_kid(envoy, jwks, upstream, signing_key, kid: str, delay: float):
    """Publishes a new key `kid` next to the test key, makes the JWKS answer `delay` s late,
    and sends a token signed by the new key: its kid is unknown to the filter, so the
    request waits for an unknown-kid refetch. Returns (response, counters before, JWKS
    hits before)."""
    _wait_refetch_window(_REFETCHES)
    new_key = tk.SigningKey.generate(kid)
    jwks.serve(tk.jwks(signing_key, new_key))
    jwks.delay_answers(delay)
    before = envoy.counters()
    hits = jwks.hits(PATH)
    _REFETCHES.append(time.monotonic())
    upstream.clear()
    return envoy.request("/x", bearer(id_token(new_key))), before, hits


def test_unknown_kid_request_waits_for_a_refetch_slower_than_itself_within_timeout_and_gets_200(
    refetch_envoy, jwks, upstream, signing_key
):
    envoy = refetch_envoy
    # 0.6 s: within jwks_timeout_ms (1 s)
    resp, before, hits = _request_with_new_kid(
        envoy, jwks, upstream, signing_key, "slow-new-key", 0.6
    )
    assert_allowed(resp, upstream)
    assert 0.6 <= resp.elapsed < 1.0 + SLACK, resp.elapsed
    assert jwks.hits(PATH) == hits + 1
    after = envoy.counters()
    assert after["jwks_refetch_unknown_kid"] == before["jwks_refetch_unknown_kid"] + 1
    assert after["jwks_fetch_ok"] == before["jwks_fetch_ok"] + 1
    print(f"[measure] slow refetch (0.6 s, timeout 1 s): request waited {resp.elapsed:.2f} s, "
          f"200, +1 fetch")


def test_unknown_kid_request_whose_refetch_times_out_gets_401_after_the_timeout(
    refetch_envoy, jwks, upstream, signing_key
):
    envoy = refetch_envoy
    # 2 s: past jwks_timeout_ms (1 s)
    resp, before, hits = _request_with_new_kid(envoy, jwks, upstream, signing_key, "late-key", 2.0)
    # The key exists, but the refetch that would have shown it timed out: the kid is
    # unknown after the refetch (401, not 503: the keys the filter has are usable).
    assert_invalid(resp, upstream)
    waited = resp.elapsed
    assert 1.0 - 0.1 <= waited < 1.0 + 1.0 + SLACK, waited
    assert jwks.hits(PATH) == hits + 1
    wait_until(
        lambda: envoy.counter("jwks_fetch_failed") == before["jwks_fetch_failed"] + 1, 2,
        "the timed-out refetch to count as failed",
    )  # fmt: skip
    after = envoy.counters()
    assert after["jwks_refetch_unknown_kid"] == before["jwks_refetch_unknown_kid"] + 1
    assert after["jwks_fetch_ok"] == before["jwks_fetch_ok"]
    # The known key still works, at once.
    jwks.serve(tk.jwks(signing_key))
    upstream.clear()
    resp = envoy.request("/x", bearer(id_token(signing_key)))
    assert_allowed(resp, upstream)
    assert resp.elapsed < 0.5
    print(f"[measure] refetch past timeout: 401 after {waited:.2f} s, +1 fetch, failed +1")

