"""Scenario 9: the counters an operator alerts on match what clients saw."""

from __future__ import annotations

import re
import time

from support import tokens as tk
from support.assertions import assert_allowed, assert_expired, assert_invalid, assert_missing
from support.authorizer_config import (
    MOTO_CLUSTER,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    standard_config,
)


def test_counters_match_a_mix_of_requests(
    start_envoy, cognito, moto, jwks, upstream, alice, signing_key
):
    envoy = start_envoy(
        standard_config(cognito.pool_id, cognito.client_id),
        clusters={MOTO_CLUSTER: moto.port, TEST_CLUSTER: jwks.port},
    )
    # payload: {"iss": TEST_ISSUER, "aud": TEST_CLIENT, "token_use": "id",
    #           "iat": now-3720, "exp": now-120, ...}
    expired_id_token = tk.sign(
        signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, now=int(time.time()) - 3720)
    )

    def send(headers):
        upstream.clear()
        return envoy.request("/hello", headers)

    for token in (alice.id_token, alice.access_token, alice.id_token):
        assert_allowed(send({"Authorization": f"Bearer {token}"}), upstream)
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        assert_missing(send(headers), upstream)
    for value in ("Bearer not-a-jwt", f"Bearer {tk.with_flipped_signature(alice.id_token)}"):
        assert_invalid(send({"Authorization": value}), upstream)
    assert_expired(send({"Authorization": f"Bearer {expired_id_token}"}), upstream)

    counters = envoy.counters()
    assert {k: counters.get(k) for k in (
        "allowed", "denied_missing", "denied_invalid", "denied_expired", "denied_forbidden",
        "unavailable", "jwks_fetch_failed",
    )} == {
        "allowed": 3, "denied_missing": 3, "denied_invalid": 2, "denied_expired": 1,
        "denied_forbidden": 0, "unavailable": 0, "jwks_fetch_failed": 0,
    }, counters  # fmt: skip
    assert counters["jwks_fetch_ok"] >= 1
    assert counters["cache_miss"] >= 1
    # The same numbers for Prometheus.
    prometheus = envoy.admin("/stats/prometheus").body.decode()
    assert re.search(r"^\S*cognito_authorizer_allowed(\{[^}]*\})? 3$", prometheus, re.M), [
        line for line in prometheus.splitlines() if "cognito_authorizer" in line
    ]
    # Per pool, under the pool's name.
    assert envoy.pool_counter("moto", "allowed") == 3
    assert envoy.pool_counter("test", "denied_expired") == 1
    assert envoy.pool_counter("test", "allowed") == 0
