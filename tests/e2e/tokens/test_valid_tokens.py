"""Scenario 1: valid Cognito tokens reach the upstream, with the identity as headers."""

from __future__ import annotations

import pytest

from support import tokens as tk
from support.assertions import Outcomes, assert_allowed
from support.authorizer_config import TEST_CLIENT, TEST_ISSUER


def test_valid_moto_id_token_reaches_upstream_with_claim_headers(authorizer, upstream, alice):
    _, claims, _ = tk.split(alice.id_token)
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {alice.id_token}"})

    seen = assert_allowed(resp, upstream)
    assert seen.path == "/hello"
    assert seen.header("x-cognito-sub") == claims["sub"]
    assert seen.header("x-cognito-username") == "alice"
    assert seen.header("x-cognito-groups") == "admins"
    assert seen.header("x-cognito-token-use") == "id"
    assert seen.header("x-cognito-client-id") is None  # id tokens carry `aud`, not client_id
    # forward_token defaults to true: the upstream gets the token as sent.
    assert seen.header("authorization") == f"Bearer {alice.id_token}"
    assert outcomes.changes() == {"allowed": 1}


def test_valid_moto_access_token_reaches_upstream_with_claim_headers(
    authorizer, upstream, alice, cognito
):
    _, claims, _ = tk.split(alice.access_token)

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {alice.access_token}"})

    seen = assert_allowed(resp, upstream)
    assert seen.header("x-cognito-sub") == claims["sub"]
    assert seen.header("x-cognito-groups") == "admins"
    assert seen.header("x-cognito-token-use") == "access"
    assert seen.header("x-cognito-client-id") == cognito.client_id
    # The access token names the user in `username`, not `cognito:username`.
    assert seen.header("x-cognito-username") is None


@pytest.mark.parametrize(
    "template",
    ["Bearer {}", "bearer {}", "BEARER {}", "BeArEr {}", "{}"],
    ids=["Bearer", "bearer", "BEARER", "BeArEr", "raw-token-without-scheme"],
)
def test_valid_token_passes_with_any_bearer_spelling_or_none(authorizer, upstream, alice, template):
    resp = authorizer.request("/hello", {"Authorization": template.format(alice.id_token)})

    assert_allowed(resp, upstream)


def test_valid_token_passes_on_every_method(authorizer, upstream, alice):
    resp = authorizer.request(
        "/items", {"Authorization": f"Bearer {alice.access_token}"}, method="POST", body=b"{}"
    )

    seen = assert_allowed(resp, upstream)
    assert seen.method == "POST"


def test_user_without_groups_gets_no_groups_header(authorizer, upstream, cognito):
    bob = cognito.login("bob")

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {bob.id_token}"})

    seen = assert_allowed(resp, upstream)
    assert seen.header("x-cognito-username") == "bob"
    assert seen.header("x-cognito-groups") is None


def test_self_minted_id_token_claims_become_headers_as_json_scalars(
    authorizer, upstream, signing_key
):
    # payload: {"sub": "0f6f...", "aud": TEST_CLIENT, "iss": TEST_ISSUER, "token_use": "id",
    #           "cognito:username": "carol", "cognito:groups": ["admins", "readers"],
    #           "email_verified": true, "auth_time": 1700000000, "exp": now+3600, ...}
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "carol", ["admins", "readers"])
    claims["auth_time"] = 1700000000
    token = tk.sign(signing_key, claims)

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {token}"})

    seen = assert_allowed(resp, upstream)
    assert seen.header("x-cognito-sub") == claims["sub"]
    assert seen.header("x-cognito-username") == "carol"
    assert seen.header("x-cognito-groups") == "admins,readers"  # arrays joined with ","
    assert seen.header("x-cognito-auth-time") == "1700000000"  # numbers as JSON
    assert seen.header("x-cognito-email-verified") == "true"  # booleans as JSON


def test_id_token_with_audience_list_holding_the_client_passes(authorizer, upstream, signing_key):
    # payload: id token with "aud": ["some-other-app", TEST_CLIENT]
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT)
    claims["aud"] = ["some-other-app", TEST_CLIENT]
    token = tk.sign(signing_key, claims)

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {token}"})

    assert_allowed(resp, upstream)


def test_same_token_twice_is_allowed_twice(authorizer, upstream, alice):
    """The second answer may come from the token cache; it must be the same answer."""
    outcomes = Outcomes(authorizer)
    for _ in range(2):
        upstream.clear()
        resp = authorizer.request("/again", {"Authorization": f"Bearer {alice.id_token}"})
        assert_allowed(resp, upstream)
    assert outcomes.changes() == {"allowed": 2}
