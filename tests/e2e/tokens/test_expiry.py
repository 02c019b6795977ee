"""Scenario 3: time claims. Expired beyond the 60 s skew → the "expired" reply; within the
skew → allowed; not-yet-valid or non-numeric time claims → invalid."""

from __future__ import annotations

import time

import pytest

from support import tokens as tk
from support.assertions import Outcomes, assert_allowed, assert_expired, assert_invalid
from support.authorizer_config import TEST_CLIENT, TEST_ISSUER, TEST_KID


def _issued(seconds_ago: int, lifetime: int = 3600) -> dict:
    """id token claims issued `seconds_ago`, living `lifetime` seconds."""
    return tk.id_claims(
        TEST_ISSUER, TEST_CLIENT, now=int(time.time()) - seconds_ago, lifetime=lifetime
    )


@pytest.fixture
def expired_id_token(signing_key) -> str:
    # payload: {"iss": TEST_ISSUER, "aud": TEST_CLIENT, "token_use": "id",
    #           "iat": now-3720, "auth_time": now-3720, "exp": now-120, ...}  (past the 60 s skew)
    return tk.sign(signing_key, _issued(seconds_ago=3720))


@pytest.fixture
def expired_access_token(signing_key) -> str:
    # payload: {"iss": TEST_ISSUER, "client_id": TEST_CLIENT, "token_use": "access",
    #           "iat": now-3900, "exp": now-300, ...}
    claims = tk.access_claims(TEST_ISSUER, TEST_CLIENT, now=int(time.time()) - 3900)
    return tk.sign(signing_key, claims)


@pytest.fixture
def expired_with_tampered_signature_token(expired_id_token) -> str:
    # expired_id_token's header and payload (exp now-120) with one signature character changed
    return tk.with_flipped_signature(expired_id_token)


@pytest.fixture
def expired_signed_by_foreign_key_token() -> str:
    # header {"alg": "RS256", "kid": TEST_KID}; payload as expired_id_token (exp now-120);
    # signed by a key that is not in the JWKS
    return tk.sign(tk.SigningKey.generate(TEST_KID), _issued(seconds_ago=3720))


@pytest.fixture
def expired_30s_ago_within_skew_token(signing_key) -> str:
    # payload: {... "iat": now-3630, "exp": now-30, ...}: expired, but within clock_skew_seconds
    return tk.sign(signing_key, _issued(seconds_ago=3630))


@pytest.fixture
def not_yet_valid_nbf_token(signing_key) -> str:
    # payload: {... "iat": now, "nbf": now+600, "exp": now+3600, ...}
    claims = _issued(seconds_ago=0)
    claims["nbf"] = claims["iat"] + 600
    return tk.sign(signing_key, claims)


@pytest.fixture
def issued_in_future_token(signing_key) -> str:
    # payload: {... "iat": now+600, "auth_time": now+600, "exp": now+4200, ...}
    return tk.sign(signing_key, _issued(seconds_ago=-600))


@pytest.fixture
def exp_as_string_token(signing_key) -> str:
    # payload: {... "exp": "<now+3600 as a string>", ...}: numeric claims must be numbers
    claims = _issued(seconds_ago=0)
    claims["exp"] = str(claims["exp"])
    return tk.sign(signing_key, claims)


@pytest.fixture
def without_exp_token(signing_key) -> str:
    # payload: id token claims with no "exp" at all
    return tk.sign(signing_key, tk.without(_issued(seconds_ago=0), "exp"))


def test_expired_id_token_gets_expired_body(authorizer, upstream, expired_id_token):
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {expired_id_token}"})

    assert_expired(resp, upstream)
    assert outcomes.changes() == {"denied_expired": 1}


def test_expired_access_token_gets_expired_body(authorizer, upstream, expired_access_token):
    resp = authorizer.request("/hello", {"Authorization": f"Bearer {expired_access_token}"})

    assert_expired(resp, upstream)


def test_each_expired_request_counts_once(authorizer, upstream, expired_id_token):
    """The same expired token twice (the second may be a cache hit): two expired replies."""
    outcomes = Outcomes(authorizer)
    for _ in range(2):
        assert_expired(
            authorizer.request("/hello", {"Authorization": f"Bearer {expired_id_token}"}), upstream
        )
    assert outcomes.changes() == {"denied_expired": 2}


@pytest.mark.parametrize(
    "token_fixture",
    ["expired_with_tampered_signature_token", "expired_signed_by_foreign_key_token"],
)
def test_forged_expired_token_is_invalid_not_expired(authorizer, upstream, request, token_fixture):
    """ "The incoming token has expired" is said of authentic tokens only: a forged one is
    rejected for its signature (README "Behaviour" checks the signature before the time claims)."""
    token = request.getfixturevalue(token_fixture)
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {token}"})

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}


def test_expired_token_counts_against_its_pool(authorizer, upstream, expired_id_token):
    before = authorizer.pool_counter("test", "denied_expired")

    assert_expired(
        authorizer.request("/hello", {"Authorization": f"Bearer {expired_id_token}"}), upstream
    )

    assert authorizer.pool_counter("test", "denied_expired") == before + 1


def test_token_expired_within_clock_skew_passes(
    authorizer, upstream, expired_30s_ago_within_skew_token
):
    resp = authorizer.request(
        "/hello", {"Authorization": f"Bearer {expired_30s_ago_within_skew_token}"}
    )

    assert_allowed(resp, upstream)


@pytest.mark.parametrize(
    "token_fixture",
    [
        "not_yet_valid_nbf_token",
        "issued_in_future_token",
        "exp_as_string_token",
        "without_exp_token",
    ],
)
def test_token_with_bad_time_claims_is_invalid(authorizer, upstream, request, token_fixture):
    token = request.getfixturevalue(token_fixture)
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {token}"})

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}
