"""Several user pools (README "Behaviour"): the token's `iss` picks the pool, and that pool's own app
clients and token_use apply; a token of one pool carrying another pool's client id is
invalid; per-pool counters move for the pool that decided.

One Envoy for the module: `moto` (moto's pool, id tokens only, its app client) and `own`
(the self-minted pool, access tokens only, its own client), plus one admin rule."""

from __future__ import annotations

import time

import pytest

from support import tokens as tk
from support.assertions import (
    Outcomes,
    assert_allowed,
    assert_expired,
    assert_forbidden,
    assert_invalid,
)
from support.authorizer_config import (
    CLAIM_HEADERS,
    MOTO_CLUSTER,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    UNKNOWN_ISSUER,
    moto_pool,
    self_minted_pool,
)
from support.scenarios import PoolOutcomes, bearer, mint_access, mint_id

POOLS = ["moto", "own"]


@pytest.fixture(scope="module")
def envoy(module_envoys, cognito, moto, jwks):
    config = {
        "user_pools": [
            {**moto_pool(cognito.pool_id, cognito.client_id), "token_use": ["id"]},
            self_minted_pool(name="own", token_use=["access"]),
        ],
        "rules": [{"match": {"prefix": "/admin"}, "require": {"groups": ["admins"]}}],
        "claims_to_headers": CLAIM_HEADERS,
    }
    return module_envoys(
        config, {MOTO_CLUSTER: moto.port, TEST_CLUSTER: jwks.port}, name="multiple-pools"
    )


@pytest.fixture
def measure(envoy):
    """Snapshots of the global and per-pool outcome counters, taken when the test starts."""
    return Outcomes(envoy), PoolOutcomes(envoy, POOLS)


def send(envoy, upstream, token, path="/hello"):
    upstream.clear()
    return envoy.request(path, bearer(token))


# --- each pool with its own tokens -------------------------------------------------------


def test_moto_id_token_is_allowed_and_counted_for_moto(envoy, upstream, alice, measure):
    outcomes, pools = measure

    seen = assert_allowed(send(envoy, upstream, alice.id_token), upstream)

    assert seen.header("x-cognito-username") == "alice"
    assert outcomes.changes() == {"allowed": 1}
    assert pools.changes() == {("moto", "allowed"): 1}


def test_own_access_token_is_allowed_and_counted_for_own(envoy, upstream, signing_key, measure):
    outcomes, pools = measure

    seen = assert_allowed(send(envoy, upstream, mint_access(signing_key)), upstream)

    assert seen.header("x-cognito-client-id") == TEST_CLIENT
    assert outcomes.changes() == {"allowed": 1}
    assert pools.changes() == {("own", "allowed"): 1}


# --- token_use per pool ------------------------------------------------------------------


def test_moto_access_token_is_invalid_where_moto_pool_takes_id_tokens_only(
    envoy, upstream, alice, measure
):
    outcomes, pools = measure

    assert_invalid(send(envoy, upstream, alice.access_token), upstream)
    assert outcomes.changes() == {"denied_invalid": 1}
    assert pools.changes() == {("moto", "denied_invalid"): 1}


def test_own_id_token_is_invalid_where_own_pool_takes_access_tokens_only(
    envoy, upstream, signing_key, measure
):
    outcomes, pools = measure

    assert_invalid(send(envoy, upstream, mint_id(signing_key)), upstream)
    assert pools.changes() == {("own", "denied_invalid"): 1}


# --- client ids per pool -----------------------------------------------------------------


def test_own_token_with_moto_pools_client_id_is_invalid(
    envoy, upstream, signing_key, cognito, measure
):
    # payload: access token of the own pool (iss TEST_ISSUER) whose client_id is the moto
    # pool's app client — a client of another pool
    _, pools = measure
    token = mint_access(signing_key, client_id=cognito.client_id)

    assert_invalid(send(envoy, upstream, token), upstream)
    assert pools.changes() == {("own", "denied_invalid"): 1}


def test_moto_token_of_own_pools_client_id_is_invalid(
    envoy, upstream, signing_key, cognito, measure
):
    """An id token claiming moto's issuer and `aud` = the own pool's client: refused as
    moto's (wrong client) before its key is even looked up."""
    # payload: {"iss": <moto pool issuer>, "aud": TEST_CLIENT, "token_use": "id", ...},
    # signed with the test key (kid test-key-1)
    _, pools = measure
    token = mint_id(signing_key, issuer=cognito.issuer, client_id=TEST_CLIENT)

    assert_invalid(send(envoy, upstream, token), upstream)
    assert pools.changes() == {("moto", "denied_invalid"): 1}


def test_moto_id_token_of_unconfigured_client_is_invalid(
    envoy, upstream, cognito, other_client_id, measure
):
    _, pools = measure
    tokens = cognito.login("alice", client_id=other_client_id)

    assert_invalid(send(envoy, upstream, tokens.id_token), upstream)
    assert pools.changes() == {("moto", "denied_invalid"): 1}


# --- keys per pool -----------------------------------------------------------------------


def test_token_naming_moto_issuer_but_signed_by_own_key_is_invalid(
    envoy, upstream, signing_key, cognito, measure
):
    # payload: a well-formed moto id token (moto issuer, moto client), signed with the
    # test key: moto's JWKS does not hold that key
    _, pools = measure
    token = mint_id(signing_key, issuer=cognito.issuer, client_id=cognito.client_id)

    assert_invalid(send(envoy, upstream, token), upstream)
    assert pools.changes() == {("moto", "denied_invalid"): 1}


def test_moto_token_reissued_for_own_issuer_is_invalid(envoy, upstream, alice, measure):
    # payload: alice's moto id token with iss changed to the own pool's issuer (and the own
    # client as aud, token_use access) after signing: the own pool's key cannot verify it
    _, pools = measure
    token = tk.with_payload_changed(
        alice.id_token, iss=TEST_ISSUER, client_id=TEST_CLIENT, token_use="access"
    )

    assert_invalid(send(envoy, upstream, token), upstream)
    assert pools.changes() == {("own", "denied_invalid"): 1}


# --- outcomes counted for the pool that decided ------------------------------------------


def test_expired_token_is_counted_for_its_pool(envoy, upstream, signing_key, measure):
    outcomes, pools = measure
    # payload: own-pool access token issued 3720 s ago, expired 120 s ago
    token = tk.sign(
        signing_key,
        tk.access_claims(TEST_ISSUER, TEST_CLIENT, now=int(time.time()) - 3720),
    )

    assert_expired(send(envoy, upstream, token), upstream)
    assert outcomes.changes() == {"denied_expired": 1}
    assert pools.changes() == {("own", "denied_expired"): 1}


def test_forbidden_is_counted_for_the_pool_of_the_token(
    envoy, upstream, cognito, signing_key, measure
):
    outcomes, pools = measure
    bob = cognito.login("bob")

    assert_forbidden(send(envoy, upstream, bob.id_token, "/admin"), upstream)
    assert_forbidden(send(envoy, upstream, mint_access(signing_key), "/admin"), upstream)
    assert_allowed(send(envoy, upstream, mint_access(signing_key, groups=["admins"]), "/admin"), upstream)  # fmt: skip

    assert outcomes.changes() == {"denied_forbidden": 2, "allowed": 1}
    assert pools.changes() == {
        ("moto", "denied_forbidden"): 1,
        ("own", "denied_forbidden"): 1,
        ("own", "allowed"): 1,
    }


def test_unknown_issuer_moves_only_the_global_counter(envoy, upstream, signing_key, measure):
    outcomes, pools = measure

    assert_invalid(send(envoy, upstream, mint_access(signing_key, issuer=UNKNOWN_ISSUER)), upstream)

    assert outcomes.changes() == {"denied_invalid": 1}
    assert pools.changes() == {}
