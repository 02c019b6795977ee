"""The filter configurations the end-to-end tests run against, and the names in them.

Three pools: moto's real pool (tokens from initiate_auth), a pool whose tokens the tests
mint with their own key (so they can be expired, mis-addressed or forged at will), and an
access-token-only pool sharing that key. Claim headers cover strings, lists, numbers and
booleans."""

from __future__ import annotations

from . import tokens as tk

PASSWORD = "Passw0rd!e2e-test"

# The self-minted pool: key and JWKS under the tests' control.
TEST_POOL = "us-east-1_TestPool1"
TEST_ISSUER = tk.cognito_issuer(TEST_POOL)
TEST_CLIENT = "3testclient0example0id1x"
TEST_KID = "test-key-1"
# Accepts access tokens only (same key, its own JWKS path).
ACCESS_ONLY_POOL = "us-east-1_AccessOnly"
ACCESS_ONLY_ISSUER = tk.cognito_issuer(ACCESS_ONLY_POOL)
# An issuer no pool is configured for.
UNKNOWN_ISSUER = tk.cognito_issuer("us-east-1_NotConfigured")

CLAIM_HEADERS = {
    "sub": "x-cognito-sub",
    "cognito:username": "x-cognito-username",
    "cognito:groups": "x-cognito-groups",
    "token_use": "x-cognito-token-use",
    "client_id": "x-cognito-client-id",
    "auth_time": "x-cognito-auth-time",
    "email_verified": "x-cognito-email-verified",
}

# Cluster names in the bootstraps.
MOTO_CLUSTER = "cognito_jwks"
TEST_CLUSTER = "test_jwks"


def jwks_uri(pool_id: str) -> str:
    """Explicit jwks_uri of the self-minted pools (the host is irrelevant: the cluster
    decides where the fetch goes)."""
    return f"http://jwks.test/{pool_id}/.well-known/jwks.json"


def jwks_path(pool_id: str) -> str:
    return f"/{pool_id}/.well-known/jwks.json"


def self_minted_pool(**overrides) -> dict:
    """The self-minted pool's entry in `user_pools`, fetched from cluster `test_jwks`."""
    return {
        "name": "test",
        "user_pool_id": TEST_POOL,
        "issuer": TEST_ISSUER,
        "jwks_uri": jwks_uri(TEST_POOL),
        "client_ids": [TEST_CLIENT],
        "jwks_cluster": TEST_CLUSTER,
        **overrides,
    }


def moto_pool(pool_id: str, client_id: str) -> dict:
    """moto's pool: issuer and JWKS location derived from the pool id, as for real Cognito."""
    return {
        "name": "moto",
        "user_pool_id": pool_id,
        "client_ids": [client_id],
        "jwks_cluster": MOTO_CLUSTER,
    }


def standard_config(pool_id: str, client_id: str) -> dict:
    """What most tests run against: the three pools, one anonymous route (`/public`), and
    claim headers."""
    return {
        "user_pools": [
            moto_pool(pool_id, client_id),
            self_minted_pool(),
            self_minted_pool(
                name="accessonly",
                user_pool_id=ACCESS_ONLY_POOL,
                issuer=ACCESS_ONLY_ISSUER,
                jwks_uri=jwks_uri(ACCESS_ONLY_POOL),
                token_use=["access"],
            ),
        ],
        "rules": [{"match": {"prefix": "/public"}, "allow": True}],
        "claims_to_headers": CLAIM_HEADERS,
    }


def self_minted_only_config(**top_level) -> dict:
    """Just the self-minted pool (for Envoys a test starts itself), plus top-level keys."""
    return {"user_pools": [self_minted_pool()], "claims_to_headers": CLAIM_HEADERS, **top_level}
