"""Scenario 7: the JWKS lifecycle seen from a client. Requests that arrive before the keys
wait for them; keys that cannot be obtained give 503 + retry-after within the fetch
timeout; a new key is picked up by one refetch, and unknown kids are rate-limited."""

from __future__ import annotations

import threading
import time

import pytest

from support import tokens as tk
from support.assertions import Outcomes, assert_allowed, assert_invalid, assert_unavailable
from support.authorizer_config import (
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    TEST_POOL,
    jwks_path,
    self_minted_only_config,
)
from support.polling import wait_until
from support.ports import free_port
from support.scenarios import bearer

FETCH_TIMEOUT_MS = 1000


@pytest.fixture
def valid_id_token(signing_key) -> str:
    # payload: {"iss": TEST_ISSUER, "aud": TEST_CLIENT, "token_use": "id", "exp": now+3600, ...}
    return tk.sign(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT))


def _in_background(fn):
    """Runs fn() in a thread; returns (thread, result list): result[0] is fn's value, or
    the exception it raised."""
    result: list = []

    def run():
        try:
            result.append(fn())
        except Exception as e:  # noqa: BLE001 (reported by the test's assertion)
            result.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_request_before_keys_arrive_waits_and_passes(start_envoy, jwks, upstream, valid_id_token):
    jwks.hold_answers()  # the first fetch reaches the server and stays unanswered
    envoy = start_envoy(self_minted_only_config())
    jwks.wait_for_hits(1, path=jwks_path(TEST_POOL))

    thread, result = _in_background(lambda: envoy.request("/hello", bearer(valid_id_token)))
    # The request is inside Envoy ...
    wait_until(
        lambda: envoy.stats().get("http.api.downstream_rq_active", 0) >= 1,
        5,
        "the request to be in flight",
    )
    # ... and stays there while the keys are held back (it was neither refused nor passed).
    thread.join(0.5)
    assert thread.is_alive(), f"answered before the keys were served: {result}"

    released_at = time.monotonic()
    jwks.release()
    thread.join(10)

    assert not thread.is_alive(), "no answer 10 s after the keys were served"
    resp = result[0]
    assert not isinstance(resp, Exception), f"the request failed: {resp!r}"
    assert_allowed(resp, upstream)
    assert resp.elapsed >= 0.5  # it really waited for the keys
    assert jwks.fetches()[0].answered_at >= released_at
    # Decided twice (before and after the keys), counted once.
    assert envoy.counter("cache_miss") == 1
    assert envoy.counter("cache_hit") == 0


def test_request_waits_for_slow_first_fetch(start_envoy, jwks, upstream, valid_id_token):
    """The JWKS answers 1.5 s after being asked; a request sent at once gets 200, not 401/503."""
    jwks.delay_answers(1.5)
    envoy = start_envoy(self_minted_only_config())

    resp = envoy.request("/hello", bearer(valid_id_token))

    assert_allowed(resp, upstream)
    fetch = jwks.fetches(jwks_path(TEST_POOL))[0]
    assert fetch.answered_at is not None
    # Sent before the keys were served (else this test proved nothing), answered after.
    assert time.monotonic() - resp.elapsed < fetch.answered_at


def _fail_with_500(jwks):
    jwks.fail(500)


def _answer_garbage(jwks):
    jwks.serve_raw(b"<html>this is not a key set</html>")


def _answer_empty_body(jwks):
    jwks.serve_raw(b"")


def _never_answer(jwks):
    jwks.hold_answers()  # longer than jwks_timeout_ms: the fetch times out


@pytest.mark.parametrize(
    "break_jwks", [_fail_with_500, _answer_garbage, _answer_empty_body, _never_answer],
    ids=["http-500", "not-json", "empty-body", "no-answer"],
)  # fmt: skip
def test_keys_not_obtainable_gives_503_with_retry_after(
    start_envoy, jwks, upstream, valid_id_token, break_jwks
):
    break_jwks(jwks)
    envoy = start_envoy(self_minted_only_config(jwks_timeout_ms=FETCH_TIMEOUT_MS))
    outcomes = Outcomes(envoy)

    resp = envoy.request("/hello", bearer(valid_id_token))

    assert_unavailable(resp, upstream)
    # Bounded by the fetch timeout (plus scheduling slack), never by the client's timeout.
    assert resp.elapsed < FETCH_TIMEOUT_MS / 1000 + 2.0, f"took {resp.elapsed:.2f} s"
    assert outcomes.changes() == {"unavailable": 1}
    assert envoy.counter("jwks_fetch_failed") >= 1
    assert envoy.counter("jwks_fetch_ok") == 0


def test_jwks_cluster_refusing_connections_gives_503(start_envoy, upstream, valid_id_token):
    closed_port = free_port()  # nothing listens there
    envoy = start_envoy(
        self_minted_only_config(jwks_timeout_ms=FETCH_TIMEOUT_MS),
        clusters={TEST_CLUSTER: closed_port},
    )

    resp = envoy.request("/hello", bearer(valid_id_token))

    assert_unavailable(resp, upstream)
    assert resp.elapsed < FETCH_TIMEOUT_MS / 1000 + 2.0, f"took {resp.elapsed:.2f} s"


def test_rotated_key_is_picked_up_by_one_refetch_then_unknown_kids_are_rate_limited(
    start_envoy, jwks, upstream, signing_key, valid_id_token
):
    path = jwks_path(TEST_POOL)
    envoy = start_envoy(self_minted_only_config())
    assert_allowed(envoy.request("/", bearer(valid_id_token)), upstream)
    fetches = jwks.hits(path)

    # Cognito rotates: the JWKS now also lists a new key, and tokens are signed with it.
    rotated = tk.SigningKey.generate("rotated-key-2")
    jwks.serve(tk.jwks(signing_key, rotated))
    # payload: {"iss": TEST_ISSUER, "aud": TEST_CLIENT, "token_use": "id", ...}, kid rotated-key-2
    rotated_token = tk.sign(rotated, tk.id_claims(TEST_ISSUER, TEST_CLIENT))
    upstream.clear()
    assert_allowed(envoy.request("/", bearer(rotated_token)), upstream)
    assert jwks.hits(path) == fetches + 1, "the unknown kid should cause exactly one refetch"

    # Within jwks_min_refetch_seconds (10 s) of that refetch, another unknown kid is refused
    # without fetching again.
    upstream.clear()
    # payload: as above, header kid "never-published", signed with the test key
    unknown = tk.sign(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT), kid="never-published")
    for _ in range(3):
        assert_invalid(envoy.request("/", bearer(unknown)), upstream)
    assert jwks.hits(path) == fetches + 1


def test_keys_are_fetched_once_per_process_not_per_worker(
    start_envoy, jwks, upstream, valid_id_token
):
    """--concurrency 2 means three VMs (main + 2 workers); the key set is shared."""
    envoy = start_envoy(self_minted_only_config())
    def allowed():
        upstream.clear()
        assert_allowed(envoy.request("/", bearer(valid_id_token)), upstream)

    envoy.on_every_worker(allowed)

    assert jwks.hits(jwks_path(TEST_POOL)) == 1
    assert envoy.counter("jwks_fetch_ok") == 1
