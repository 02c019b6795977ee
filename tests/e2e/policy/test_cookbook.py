"""README "## Cookbook": every recipe, exactly as printed, on real Envoy.

The JSON (and YAML) blocks are read from README.md under each `### ` heading, merged onto
the minimal configuration the Cookbook's introduction prints (a recipe's `user_pools`
replaces the base pools), and only the README placeholders are adapted to the fixtures:
`us-east-1_AbCdEf123` becomes the pool backing the recipe (moto's pool, or the self-minted
pool when the recipe needs tokens moto cannot issue: custom scopes, client credentials,
expired tokens), `<app client>` that pool's client, and the cluster `cognito_jwks` points
at that pool's JWKS server. `m2mclient123` is used as it is. The checks are the ones each
recipe's text promises (its curl lines and statuses)."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support import tokens as tk
from support.assertions import (
    Outcomes,
    assert_allowed,
    assert_forbidden,
    assert_invalid,
    assert_missing,
)
from support.authorizer_config import TEST_CLIENT, TEST_POOL
from support.polling import wait_until
from support.cookbook import ENVOY_CONFIG_RECIPES, INTRO, RECIPES
from support.scenarios import bearer, mint_access, mint_id

PLACEHOLDER_POOL = "us-east-1_AbCdEf123"
PLACEHOLDER_CLIENT = "<app client>"
README_CLUSTER = "cognito_jwks"
M2M_CLIENT = "m2mclient123"


def _base_config_text() -> str:
    """The minimal configuration the Cookbook's introduction prints inline."""
    match = re.search(r"`(\{\"user_pools\".*?\})`", INTRO, flags=re.S)
    assert match, "the Cookbook introduction no longer prints the minimal configuration"
    return match.group(1)


def recipe_config(title: str, pool_id: str, client_id: str) -> dict:
    """The recipe's JSON merged onto the base; README placeholders → the fixture's names."""

    def adapt(text: str) -> dict:
        text = text.replace(PLACEHOLDER_POOL, pool_id).replace(PLACEHOLDER_CLIENT, client_id)
        return json.loads(text)

    base = adapt(_base_config_text())
    json_blocks = [content for lang, content in RECIPES[title].blocks if lang == "json"]
    assert len(json_blocks) <= 1, f"recipe {title!r} has {len(json_blocks)} JSON blocks"
    # A recipe without JSON (the access log one changes the HCM) runs the base as it is.
    recipe = adapt(json_blocks[0]) if json_blocks else {}
    return {**base, **recipe}


TESTED_RECIPES = {
    "Public health check",
    "Admin-only routes by group",
    "Scope-protected write methods",
    "Machine-to-machine clients",
    "Browser apps (CORS)",
    "Rolling out in report mode",
    "Access log with the decision",
}


def test_every_readme_recipe_has_a_test_here():
    assert set(RECIPES) == TESTED_RECIPES | set(ENVOY_CONFIG_RECIPES)


def test_the_readme_base_config_is_the_minimal_one():
    base = json.loads(_base_config_text())
    assert base == {
        "user_pools": [
            {
                "user_pool_id": PLACEHOLDER_POOL,
                "client_ids": [PLACEHOLDER_CLIENT],
                "jwks_cluster": README_CLUSTER,
            }
        ]
    }


# --- Envoys, one per recipe (started on first use) ---------------------------------------


@pytest.fixture(scope="module")
def recipe_envoy(module_envoys, cognito, moto, jwks):
    """recipe_envoy(title, backing="moto"|"minted", access_log=None) → Envoy."""
    started = {}

    def get(title: str, backing: str = "moto", access_log=None):
        if title not in started:
            if backing == "moto":
                pool_id, client_id, port = cognito.pool_id, cognito.client_id, moto.port
            else:
                pool_id, client_id, port = TEST_POOL, TEST_CLIENT, jwks.port
            config = recipe_config(title, pool_id, client_id)
            started[title] = module_envoys(
                config,
                {README_CLUSTER: port},
                access_log=access_log,
                name=re.sub(r"\W+", "-", title).strip("-").lower(),
            )
        return started[title]

    return get


@pytest.fixture
def send(upstream):
    def go(envoy, path, headers=(), method="GET"):
        upstream.clear()
        return envoy.request(path, headers, method=method)

    return go


# --- Public health check -----------------------------------------------------------------


def test_health_check_recipe_healthz_is_200_without_token(recipe_envoy, send, upstream):
    envoy = recipe_envoy("Public health check")

    seen = assert_allowed(send(envoy, "/healthz"), upstream)
    assert seen.path == "/healthz"


def test_health_check_recipe_other_paths_are_401_without_token(recipe_envoy, send, upstream, alice):
    envoy = recipe_envoy("Public health check")

    assert_missing(send(envoy, "/orders"), upstream)
    assert_allowed(send(envoy, "/orders", bearer(alice.id_token)), upstream)


# --- Admin-only routes by group ----------------------------------------------------------

ADMIN = "Admin-only routes by group"


def test_admin_recipe_admins_group_user_gets_200_with_identity(recipe_envoy, send, upstream, alice):
    envoy = recipe_envoy(ADMIN)

    for token in (alice.id_token, alice.access_token):
        seen = assert_allowed(send(envoy, "/admin/users", bearer(token)), upstream)
        assert seen.header("x-cognito-groups") == "admins"
    # the id token names the user in cognito:username (the access token in `username`)
    seen = assert_allowed(send(envoy, "/admin/users", bearer(alice.id_token)), upstream)
    assert seen.header("x-cognito-username") == "alice"


def test_admin_recipe_user_without_group_gets_403(recipe_envoy, send, upstream, cognito):
    envoy = recipe_envoy(ADMIN)
    bob = cognito.login("bob")

    for token in (bob.id_token, bob.access_token):
        resp = send(envoy, "/admin/users", bearer(token))
        # README: 403 {"message":"Forbidden"}, www-authenticate: Bearer realm="api",
        # error="insufficient_scope" (no scope: the rule requires none)
        assert_forbidden(resp, upstream)


def test_admin_recipe_other_paths_need_any_valid_token(recipe_envoy, send, upstream, cognito):
    envoy = recipe_envoy(ADMIN)
    bob = cognito.login("bob")

    seen = assert_allowed(send(envoy, "/orders", bearer(bob.id_token)), upstream)
    assert seen.header("x-cognito-username") == "bob"
    assert seen.header("x-cognito-groups") is None
    assert_missing(send(envoy, "/orders"), upstream)
    assert_missing(send(envoy, "/admin"), upstream)


# --- Scope-protected write methods -------------------------------------------------------

WRITES = "Scope-protected write methods"


def test_writes_recipe_reads_need_any_valid_token(recipe_envoy, send, upstream, signing_key):
    envoy = recipe_envoy(WRITES, backing="minted")

    assert_allowed(send(envoy, "/orders", bearer(mint_id(signing_key))), upstream)
    assert_allowed(send(envoy, "/orders", bearer(mint_access(signing_key))), upstream)
    assert_missing(send(envoy, "/orders"), upstream)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_recipe_write_with_api_write_scope_is_200(
    recipe_envoy, send, upstream, signing_key, method
):
    envoy = recipe_envoy(WRITES, backing="minted")
    token = mint_access(signing_key, scope="api/read api/write")

    seen = assert_allowed(send(envoy, "/orders/1", bearer(token), method=method), upstream)
    assert seen.method == method


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_writes_recipe_write_with_id_token_is_403_naming_api_write(
    recipe_envoy, send, upstream, signing_key, method
):
    envoy = recipe_envoy(WRITES, backing="minted")

    resp = send(envoy, "/orders", bearer(mint_id(signing_key)), method=method)

    assert_forbidden(resp, upstream, scope="api/write")


def test_writes_recipe_write_with_access_token_without_api_write_is_403(
    recipe_envoy, send, upstream, signing_key
):
    envoy = recipe_envoy(WRITES, backing="minted")
    token = mint_access(signing_key, scope="api/read")

    assert_forbidden(send(envoy, "/orders", bearer(token), method="POST"), upstream, "api/write")


# --- Machine-to-machine clients ----------------------------------------------------------

M2M = "Machine-to-machine clients"


def m2m_token(key, client_id=M2M_CLIENT, scope="reports/read", token_use="access") -> str:
    # payload, as Cognito's client-credentials flow issues it (no username, sub = client):
    # {"sub": client_id, "token_use": "access", "scope": scope, "auth_time": now,
    #  "iss": TEST_ISSUER, "exp": now+3600, "iat": now, "version": 2, "jti": <uuid>,
    #  "client_id": client_id}
    now = int(time.time())
    return tk.sign(
        key,
        {
            "sub": client_id,
            "token_use": token_use,
            "scope": scope,
            "auth_time": now,
            "iss": tk.cognito_issuer(TEST_POOL),
            "exp": now + 3600,
            "iat": now,
            "version": 2,
            "jti": str(uuid.uuid4()),
            "client_id": client_id,
        },
    )


def test_m2m_recipe_client_credentials_token_with_scope_is_200(
    recipe_envoy, send, upstream, signing_key
):
    envoy = recipe_envoy(M2M, backing="minted")

    seen = assert_allowed(send(envoy, "/reports/daily", bearer(m2m_token(signing_key))), upstream)
    assert seen.header("x-cognito-client-id") == M2M_CLIENT
    assert seen.header("x-cognito-scope") == "reports/read"


def test_m2m_recipe_token_without_reports_read_is_403(recipe_envoy, send, upstream, signing_key):
    envoy = recipe_envoy(M2M, backing="minted")
    token = m2m_token(signing_key, scope="reports/write")

    assert_forbidden(send(envoy, "/reports/daily", bearer(token)), upstream, "reports/read")


def test_m2m_recipe_id_token_is_401(recipe_envoy, send, upstream, signing_key):
    envoy = recipe_envoy(M2M, backing="minted")
    # payload: an id token of the same pool for the same app client (aud m2mclient123)
    id_token = mint_id(signing_key, client_id=M2M_CLIENT)

    assert_invalid(send(envoy, "/reports/daily", bearer(id_token)), upstream)
    assert_invalid(send(envoy, "/other", bearer(id_token)), upstream)


def test_m2m_recipe_other_clients_token_is_401(recipe_envoy, send, upstream, signing_key):
    envoy = recipe_envoy(M2M, backing="minted")
    token = m2m_token(signing_key, client_id="otherclient456")

    assert_invalid(send(envoy, "/reports/daily", bearer(token)), upstream)


# --- Browser apps (CORS) -----------------------------------------------------------------

CORS = "Browser apps (CORS)"
APP_ORIGIN = "https://app.example.com"


def test_cors_recipe_preflight_reaches_upstream_without_token(recipe_envoy, send, upstream):
    envoy = recipe_envoy(CORS)
    headers = {"Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET"}

    seen = assert_allowed(send(envoy, "/orders", headers, method="OPTIONS"), upstream)
    assert seen.method == "OPTIONS"


def test_cors_recipe_401_carries_allow_origin_for_the_app(recipe_envoy, send, upstream):
    envoy = recipe_envoy(CORS)

    resp = send(envoy, "/orders", {"Origin": APP_ORIGIN})

    assert_missing(resp, upstream)
    assert resp.header("access-control-allow-origin") == APP_ORIGIN
    assert resp.header("vary") == "origin"


def test_cors_recipe_401_for_other_origin_has_no_cors_headers(recipe_envoy, send, upstream):
    envoy = recipe_envoy(CORS)

    resp = send(envoy, "/orders", {"Origin": "https://evil.example.com"})

    assert_missing(resp, upstream)
    assert resp.header("access-control-allow-origin") is None
    assert resp.header("vary") is None


def test_cors_recipe_token_from_id_token_cookie_is_accepted(recipe_envoy, send, upstream, alice):
    envoy = recipe_envoy(CORS)

    resp = send(envoy, "/orders", {"Origin": APP_ORIGIN, "Cookie": f"id_token={alice.id_token}"})

    assert_allowed(resp, upstream)


def test_cors_recipe_token_from_authorization_header_still_accepted(
    recipe_envoy, send, upstream, alice
):
    envoy = recipe_envoy(CORS)

    assert_allowed(send(envoy, "/orders", bearer(alice.access_token)), upstream)


# --- Rolling out in report mode ----------------------------------------------------------

REPORT = "Rolling out in report mode"


def test_report_recipe_every_request_reaches_upstream_with_decision(
    recipe_envoy, send, upstream, signing_key
):
    envoy = recipe_envoy(REPORT, backing="minted")
    valid = mint_id(signing_key)
    # payload: id token issued 3720 s ago, expired 120 s ago (beyond the 60 s skew)
    expired = tk.sign(signing_key, tk.id_claims(
        tk.cognito_issuer(TEST_POOL), TEST_CLIENT, now=int(time.time()) - 3720
    ))  # fmt: skip
    outcomes = Outcomes(envoy)

    for headers, decision in [
        ({}, "missing"),
        (bearer(valid), "allowed"),
        (bearer(tk.with_flipped_signature(valid)), "invalid"),
        (bearer(expired), "expired"),
    ]:
        seen = assert_allowed(send(envoy, "/orders", headers), upstream)
        assert seen.header_values("x-cognito-authorizer-decision") == [decision]

    # the counters count what would have been refused
    assert outcomes.changes() == {
        "allowed": 1,
        "denied_missing": 1,
        "denied_invalid": 1,
        "denied_expired": 1,
    }


# --- Access log with the decision --------------------------------------------------------

ACCESS_LOG = "Access log with the decision"


def readme_access_log() -> list[dict]:
    doc = yaml.safe_load(RECIPES[ACCESS_LOG].block("yaml"))
    return doc["access_log"]


def test_access_log_recipe_prints_decision_reason_and_sub(recipe_envoy, send, upstream, alice):
    # The recipe changes the HCM, not the filter: the filter runs the base configuration.
    assert [lang for lang, _ in RECIPES[ACCESS_LOG].blocks] == ["yaml"]
    envoy = recipe_envoy(ACCESS_LOG, access_log=readme_access_log())
    _, claims, _ = tk.split(alice.id_token)

    assert_missing(send(envoy, "/x"), upstream)
    assert_allowed(send(envoy, "/x", bearer(alice.id_token)), upstream)

    expected = [
        "GET /x 401 decision=deny reason=missing sub=-",
        f"GET /x 200 decision=allow reason=allowed sub={claims['sub']}",
    ]
    # StdoutAccessLog writes to Envoy's stdout (the harness keeps it in <name>.out)

    def logged():
        lines = _access_lines(envoy)
        return lines if all(e in lines for e in expected) else None

    lines = wait_until(logged, 10, f"access log lines {expected}")
    assert [line for line in lines if line.startswith("GET /x ")] == expected


def _access_lines(envoy) -> list[str]:
    return [line for line in envoy.process.output().splitlines() if line.startswith("GET ")]
