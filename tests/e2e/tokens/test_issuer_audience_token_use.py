"""Scenario 4: Cognito's own rules. The issuer must be a configured pool's, the token must
be for a configured app client, and of a token_use the pool accepts."""

from __future__ import annotations

import pytest

from support import tokens as tk
from support.assertions import Outcomes, assert_allowed, assert_invalid
from support.polling import wait_until
from support.authorizer_config import (
    ACCESS_ONLY_ISSUER,
    TEST_CLIENT,
    TEST_ISSUER,
    UNKNOWN_ISSUER,
)
from support.scenarios import bearer


# --- issuer ------------------------------------------------------------------------------


@pytest.fixture
def unconfigured_issuer_token(signing_key) -> str:
    # payload: {"iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_NotConfigured",
    #           "aud": TEST_CLIENT, "token_use": "id", ...} signed with the test key
    return tk.sign(signing_key, tk.id_claims(UNKNOWN_ISSUER, TEST_CLIENT))


@pytest.fixture
def issuer_with_trailing_slash_token(signing_key) -> str:
    # payload: {"iss": TEST_ISSUER + "/", ...}: issuers compare exactly
    return tk.sign(signing_key, tk.id_claims(TEST_ISSUER + "/", TEST_CLIENT))


@pytest.fixture
def without_iss_token(signing_key) -> str:
    # payload: id token claims without "iss"
    return tk.sign(signing_key, tk.without(tk.id_claims(TEST_ISSUER, TEST_CLIENT), "iss"))


def test_token_from_unconfigured_issuer_is_invalid_without_any_key_fetch(
    authorizer, upstream, jwks, unconfigured_issuer_token
):
    # The module's Envoy fetches the test pool's keys once at start: let that happen first
    # (on a busy machine it may still be under way when the first test of the module runs).
    wait_until(
        lambda: authorizer.pool_counter("test", "jwks_fetch_ok") >= 1,
        10,
        "the first fetch of the test pool's keys",
    )
    fetches_before = jwks.hits()
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", bearer(unconfigured_issuer_token))

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}
    assert jwks.hits() == fetches_before, "an unknown issuer must not cause a key fetch"


@pytest.mark.parametrize("token_fixture", ["issuer_with_trailing_slash_token", "without_iss_token"])
def test_token_whose_issuer_is_not_exactly_a_pools_is_invalid(
    authorizer, upstream, request, token_fixture
):
    resp = authorizer.request("/hello", bearer(request.getfixturevalue(token_fixture)))

    assert_invalid(resp, upstream)


# --- app client --------------------------------------------------------------------------


def test_moto_id_token_of_unconfigured_app_client_is_invalid(
    authorizer, upstream, cognito, other_client_id
):
    tokens = cognito.login("alice", client_id=other_client_id)

    resp = authorizer.request("/hello", bearer(tokens.id_token))

    assert_invalid(resp, upstream)


def test_moto_access_token_of_unconfigured_app_client_is_invalid(
    authorizer, upstream, cognito, other_client_id
):
    tokens = cognito.login("alice", client_id=other_client_id)

    resp = authorizer.request("/hello", bearer(tokens.access_token))

    assert_invalid(resp, upstream)


@pytest.fixture
def id_token_for_other_audience(signing_key) -> str:
    # payload: {"iss": TEST_ISSUER, "aud": "some-other-app", "token_use": "id", ...}
    return tk.sign(signing_key, tk.id_claims(TEST_ISSUER, "some-other-app"))


@pytest.fixture
def id_token_without_aud(signing_key) -> str:
    # payload: id token claims without "aud"
    return tk.sign(signing_key, tk.without(tk.id_claims(TEST_ISSUER, TEST_CLIENT), "aud"))


@pytest.fixture
def id_token_with_client_id_instead_of_aud(signing_key) -> str:
    # payload: {"token_use": "id", "client_id": TEST_CLIENT, no "aud", ...}: an id token is
    # checked by its aud only
    claims = tk.without(tk.id_claims(TEST_ISSUER, TEST_CLIENT), "aud")
    claims["client_id"] = TEST_CLIENT
    return tk.sign(signing_key, claims)


@pytest.fixture
def access_token_for_other_client(signing_key) -> str:
    # payload: {"iss": TEST_ISSUER, "client_id": "some-other-app", "token_use": "access", ...}
    return tk.sign(signing_key, tk.access_claims(TEST_ISSUER, "some-other-app"))


@pytest.fixture
def access_token_with_aud_but_other_client_id(signing_key) -> str:
    # payload: {"client_id": "some-other-app", "aud": TEST_CLIENT, "token_use": "access", ...}:
    # an access token is checked by its client_id only
    claims = tk.access_claims(TEST_ISSUER, "some-other-app")
    claims["aud"] = TEST_CLIENT
    return tk.sign(signing_key, claims)


@pytest.mark.parametrize(
    "token_fixture",
    [
        "id_token_for_other_audience",
        "id_token_without_aud",
        "id_token_with_client_id_instead_of_aud",
        "access_token_for_other_client",
        "access_token_with_aud_but_other_client_id",
    ],
)
def test_token_for_unconfigured_client_is_invalid(authorizer, upstream, request, token_fixture):
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", bearer(request.getfixturevalue(token_fixture)))

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}


# --- token_use ---------------------------------------------------------------------------


@pytest.fixture
def id_token_for_access_only_pool(signing_key) -> str:
    # payload: {"iss": ACCESS_ONLY_ISSUER, "aud": TEST_CLIENT, "token_use": "id", ...}
    return tk.sign(signing_key, tk.id_claims(ACCESS_ONLY_ISSUER, TEST_CLIENT))


@pytest.fixture
def access_token_for_access_only_pool(signing_key) -> str:
    # payload: {"iss": ACCESS_ONLY_ISSUER, "client_id": TEST_CLIENT, "token_use": "access", ...}
    return tk.sign(signing_key, tk.access_claims(ACCESS_ONLY_ISSUER, TEST_CLIENT))


@pytest.fixture
def without_token_use_token(signing_key) -> str:
    # payload: id token claims (aud TEST_CLIENT) without "token_use"
    return tk.sign(signing_key, tk.without(tk.id_claims(TEST_ISSUER, TEST_CLIENT), "token_use"))


@pytest.fixture
def refresh_token_use_token(signing_key) -> str:
    # payload: id token claims with "token_use": "refresh"
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT)
    claims["token_use"] = "refresh"
    return tk.sign(signing_key, claims)


def test_id_token_for_access_only_pool_is_invalid(
    authorizer, upstream, id_token_for_access_only_pool
):
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", bearer(id_token_for_access_only_pool))

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}


def test_access_token_for_access_only_pool_passes(
    authorizer, upstream, access_token_for_access_only_pool
):
    resp = authorizer.request("/hello", bearer(access_token_for_access_only_pool))

    seen = assert_allowed(resp, upstream)
    assert seen.header("x-cognito-token-use") == "access"


@pytest.mark.parametrize("token_fixture", ["without_token_use_token", "refresh_token_use_token"])
def test_token_without_id_or_access_token_use_is_invalid(
    authorizer, upstream, request, token_fixture
):
    resp = authorizer.request("/hello", bearer(request.getfixturevalue(token_fixture)))

    assert_invalid(resp, upstream)
