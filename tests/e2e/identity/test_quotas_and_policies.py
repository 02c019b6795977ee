"""The verified identity feeds Envoy's own quota and policy filters (README "Cookbook":
"Per-client quotas", "Global rate limits per client", "Policies with Envoy RBAC").

Each Envoy runs a config from `envoy/` as users copy it (tests/support/envoy.py
`shipped_bootstrap`: only the pool, the module and the cluster addresses are the tests'):
the authorizer first, then `local_ratelimit`, `ratelimit` or `rbac` keyed on the identity
headers the authorizer sets from the verified token. Those filters can trust the headers
because the authorizer removes every client copy of them first, so each test also forges
them: a client's own header never decides whose quota is spent or which policy applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from support import tokens as tk
from support.authorizer_config import TEST_ISSUER, self_minted_pool
from support.envoy import http_filter, shipped_bootstrap
from support.ratelimit_service import Descriptor, RateLimitService
from support.cookbook import ENVOY_CONFIG_RECIPES, RECIPES
from support.scenarios import bearer

ENVOY_DIR = Path(__file__).resolve().parents[3] / "envoy"
# App clients of the pool, one set per test (each test starts with full buckets).
CLIENTS = {name: f"client{name}0000111122" for name in ("a", "b", "c", "holder", "victim", "e")}
TOO_MANY = b'{"message":"Too Many Requests"}'


def pool() -> dict:
    """The self-minted pool under the shipped configs' pool name, cluster `cognito_jwks`."""
    return self_minted_pool(name="demo", jwks_cluster="cognito_jwks", client_ids=list(CLIENTS.values()))


def access_token(signing_key, client: str, groups: list[str] | None = None) -> dict:
    return bearer(tk.sign(signing_key, tk.access_claims(TEST_ISSUER, client, groups=groups)))


def id_token(signing_key, client: str, groups: list[str] | None = None) -> dict:
    return bearer(tk.sign(signing_key, tk.id_claims(TEST_ISSUER, client, groups=groups)))


# --- per-client quotas: local_ratelimit ------------------------------------------------------

QUOTA = 3  # the tests' bucket per client (the shipped file says 100 a minute)


@pytest.fixture(scope="module")
def quota_envoy(bootstrap_envoys, wasm_path, upstream, jwks):
    config = shipped_bootstrap(ENVOY_DIR / "client-quotas.yaml", wasm_path, [pool()],
                               {"upstream": upstream.port, "cognito_jwks": jwks.port})  # fmt: skip
    quota = http_filter(config, "envoy.filters.http.local_ratelimit")
    bucket = quota["typed_config"]["descriptors"][0]["token_bucket"]
    bucket.update(max_tokens=QUOTA, tokens_per_fill=QUOTA, fill_interval="3600s")
    return bootstrap_envoys(config, name="client-quotas")


def spend(envoy, headers: dict, n: int) -> list[int]:
    return [envoy.request("/orders", headers).status for _ in range(n)]


def test_a_client_over_its_quota_gets_429_while_another_is_unaffected(quota_envoy, signing_key):
    a, b = CLIENTS["a"], CLIENTS["b"]
    assert spend(quota_envoy, access_token(signing_key, a), QUOTA) == [200] * QUOTA
    refused = quota_envoy.request("/orders", access_token(signing_key, a))
    assert refused.status == 429, refused.describe()
    assert refused.body == TOO_MANY  # API Gateway's throttling answer
    assert refused.header("content-type") == "application/json"
    assert refused.header("x-ratelimit-remaining") == "0"
    assert int(refused.header("x-ratelimit-reset")) > 0  # seconds until the bucket refills
    # Client B has its own bucket; a fresh token of A's does not refill A's.
    assert quota_envoy.request("/orders", access_token(signing_key, b)).status == 200
    assert quota_envoy.request("/orders", access_token(signing_key, a)).status == 429


def test_id_tokens_spend_the_quota_of_the_client_in_their_aud(quota_envoy, signing_key):
    c = CLIENTS["c"]
    assert spend(quota_envoy, id_token(signing_key, c), QUOTA) == [200] * QUOTA
    assert quota_envoy.request("/orders", id_token(signing_key, c)).status == 429
    assert quota_envoy.request("/orders", access_token(signing_key, c)).status == 429


def test_a_forged_client_header_spends_the_token_holders_quota_not_the_victims(
    quota_envoy, signing_key, upstream
):
    holder, victim = CLIENTS["holder"], CLIENTS["victim"]
    forged = {**access_token(signing_key, holder), "x-cognito-client-id": victim,
              "x-cognito-aud": victim}  # fmt: skip
    assert spend(quota_envoy, forged, QUOTA + 1) == [200] * QUOTA + [429]
    assert upstream.requests and all(
        r.header("x-cognito-client-id") == holder and r.header("x-cognito-aud") is None
        for r in upstream.requests
    )
    # The victim's bucket is full.
    assert spend(quota_envoy, access_token(signing_key, victim), QUOTA) == [200] * QUOTA


def test_tokenless_requests_reach_no_clients_bucket(quota_envoy, signing_key, upstream):
    e = CLIENTS["e"]
    assert spend(quota_envoy, access_token(signing_key, e), QUOTA + 1) == [200] * QUOTA + [429]
    upstream.clear()
    # A tokenless request naming E is refused by the authorizer (401), never by E's quota; on
    # an anonymous route it passes with the forged header removed, spending only the bucket
    # shared by requests that name no client.
    for _ in range(QUOTA + 2):
        resp = quota_envoy.request("/orders", {"x-cognito-client-id": e})
        assert resp.status == 401, resp.describe()
        resp = quota_envoy.request("/healthz", {"x-cognito-client-id": e})
        assert resp.status == 200, resp.describe()
    assert len(upstream.requests) == QUOTA + 2
    assert all(r.header("x-cognito-client-id") is None for r in upstream.requests)


# --- global rate limits: the ratelimit filter and a rate limit service -------------------------

SERVICE_LIMIT = 3


@pytest.fixture(scope="module")
def ratelimit_service():
    service = RateLimitService(limit=SERVICE_LIMIT)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def global_envoy(bootstrap_envoys, wasm_path, upstream, jwks, ratelimit_service):
    config = shipped_bootstrap(
        ENVOY_DIR / "global-ratelimit.yaml", wasm_path, [pool()],
        {"upstream": upstream.port, "cognito_jwks": jwks.port,
         "ratelimit": ratelimit_service.port},
    )  # fmt: skip
    limiter = http_filter(config, "envoy.filters.http.ratelimit")
    # The Python stand-in answers slower than envoyproxy/ratelimit, and a timeout would let
    # the request through (failure_mode_deny: false): give it time.
    limiter["typed_config"]["timeout"] = "5s"
    return bootstrap_envoys(config, name="global-ratelimit")


def descriptors_sent(service: RateLimitService) -> list[Descriptor]:
    return [d for call in service.calls for d in call.descriptors]


@pytest.mark.parametrize("token", [access_token, id_token], ids=["access", "id"])
def test_the_service_is_asked_about_the_verified_client_and_refuses_over_its_limit(
    global_envoy, ratelimit_service, signing_key, token
):
    client = CLIENTS["a"] if token is access_token else CLIENTS["c"]
    ratelimit_service.clear()
    answers = [global_envoy.request("/orders", token(signing_key, client)).status
               for _ in range(SERVICE_LIMIT + 1)]  # fmt: skip
    assert answers == [200] * SERVICE_LIMIT + [429]
    refused = global_envoy.request("/orders", token(signing_key, client))
    assert refused.status == 429 and refused.body == TOO_MANY
    assert {call.domain for call in ratelimit_service.calls} == {"cognito-api"}
    assert descriptors_sent(ratelimit_service) == [(("client_id", client),)] * (SERVICE_LIMIT + 2)


def test_a_forged_client_header_never_reaches_the_service(
    global_envoy, ratelimit_service, signing_key, upstream
):
    holder, victim = CLIENTS["holder"], CLIENTS["victim"]
    ratelimit_service.clear()
    forged = {**access_token(signing_key, holder), "x-cognito-client-id": victim,
              "x-cognito-aud": victim}  # fmt: skip
    assert global_envoy.request("/orders", forged).status == 200
    # Without a token: refused by the authorizer before any rate limit call, or, on an
    # anonymous route, passed on with no descriptor at all.
    assert global_envoy.request("/orders", {"x-cognito-client-id": victim}).status == 401
    assert global_envoy.request("/healthz", {"x-cognito-client-id": victim}).status == 200
    assert descriptors_sent(ratelimit_service) == [(("client_id", holder),)]


# --- policies: rbac --------------------------------------------------------------------------

REPORTING = "4reportingclientexample00"  # envoy/rbac-policies.yaml
OTHER = CLIENTS["a"]
FORBIDDEN = b'{"message":"Forbidden"}'


@pytest.fixture(scope="module")
def rbac_envoy(bootstrap_envoys, wasm_path, upstream, jwks):
    shipped_pool = {**pool(), "client_ids": [*CLIENTS.values(), REPORTING]}
    config = shipped_bootstrap(ENVOY_DIR / "rbac-policies.yaml", wasm_path, [shipped_pool],
                               {"upstream": upstream.port, "cognito_jwks": jwks.port})  # fmt: skip
    return bootstrap_envoys(config, name="rbac-policies")


def assert_denied_by_rbac(resp, upstream) -> None:
    assert resp.status == 403, resp.describe()
    assert resp.body == FORBIDDEN and resp.header("content-type") == "application/json"
    assert resp.header("www-authenticate") is None  # RBAC's 403, not the authorizer's
    assert not upstream.requests


@pytest.mark.parametrize("token", [access_token, id_token], ids=["access", "id"])
def test_only_admins_may_delete(rbac_envoy, signing_key, upstream, token):
    admin = token(signing_key, OTHER, groups=["ops", "admins"])
    user = token(signing_key, OTHER, groups=["ops"])
    assert rbac_envoy.request("/orders/1", admin, method="DELETE").status == 200
    assert rbac_envoy.request("/orders/1", user, method="GET").status == 200
    upstream.clear()
    assert_denied_by_rbac(rbac_envoy.request("/orders/1", user, method="DELETE"), upstream)
    # A group name that only contains "admins" is not the group.
    lookalike = token(signing_key, OTHER, groups=["notadmins", "admins2"])
    assert_denied_by_rbac(rbac_envoy.request("/orders/1", lookalike, method="DELETE"), upstream)


def test_a_forged_groups_header_grants_nothing(rbac_envoy, signing_key, upstream):
    forged = {**access_token(signing_key, OTHER, groups=["ops"]), "x-cognito-groups": "admins"}
    upstream.clear()
    assert_denied_by_rbac(rbac_envoy.request("/orders/1", forged, method="DELETE"), upstream)
    # Without a token the authorizer answers first: its own 401.
    resp = rbac_envoy.request("/orders/1", {"x-cognito-groups": "admins"}, method="DELETE")
    assert resp.status == 401 and resp.header("www-authenticate") == 'Bearer realm="api"'


@pytest.mark.parametrize("token", [access_token, id_token], ids=["access", "id"])
def test_the_reporting_client_may_only_get_reports(rbac_envoy, signing_key, upstream, token):
    reporting = token(signing_key, REPORTING)
    assert rbac_envoy.request("/reports/2026/q4", reporting).status == 200
    for method, path in [("GET", "/orders"), ("POST", "/reports/2026/q4"), ("GET", "/reports")]:
        upstream.clear()
        assert_denied_by_rbac(rbac_envoy.request(path, reporting, method=method), upstream)
    # Other clients are not restricted to reports.
    assert rbac_envoy.request("/orders", token(signing_key, OTHER)).status == 200


def test_a_forged_client_header_neither_escapes_nor_borrows_a_policy(
    rbac_envoy, signing_key, upstream
):
    # The reporting client claiming to be another client is still held to /reports/.
    escaping = {**access_token(signing_key, REPORTING), "x-cognito-client-id": OTHER}
    upstream.clear()
    assert_denied_by_rbac(rbac_envoy.request("/orders", escaping), upstream)
    # Another client naming the reporting client is not restricted by its policy either.
    borrowing = {**access_token(signing_key, OTHER), "x-cognito-client-id": REPORTING}
    assert rbac_envoy.request("/orders", borrowing).status == 200
    assert upstream.requests[-1].header("x-cognito-client-id") == OTHER


# --- the README shows the shipped configs --------------------------------------------------


def _subtrees(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _subtrees(child)


@pytest.mark.parametrize("title", list(ENVOY_CONFIG_RECIPES))
def test_the_readme_recipe_shows_parts_of_the_shipped_config(title):
    shipped = yaml.safe_load((ENVOY_DIR / ENVOY_CONFIG_RECIPES[title]).read_text())
    parts = list(_subtrees(shipped))
    blocks = [yaml.safe_load(content) for lang, content in RECIPES[title].blocks if lang == "yaml"]
    assert blocks
    for block in blocks:
        if isinstance(block, dict) and "domain" in block:
            # The rate limit service's own config: the filter's domain and descriptor key.
            limiter = http_filter(shipped, "envoy.filters.http.ratelimit")
            assert block["domain"] == limiter["typed_config"]["domain"]
            keys = {p["descriptor_key"] for p in parts if isinstance(p, dict) and "descriptor_key" in p}
            assert {d["key"] for d in block["descriptors"]} == keys
            continue
        # A list block (filters) is part of one of the file's lists; a mapping block (keys of
        # a virtual host, say) is part of one of its mappings.
        if isinstance(block, list):
            found = any(isinstance(p, list) and all(item in p for item in block) for p in parts)
        else:
            found = any(isinstance(p, dict) and block.items() <= p.items() for p in parts)
        assert found, f"{title}: not in {ENVOY_CONFIG_RECIPES[title]}: {block}"
    wasm = http_filter(shipped, "envoy.filters.http.wasm")["typed_config"]["config"]
    claims_to_headers = json.loads(wasm["configuration"]["value"])["claims_to_headers"]
    for lang, text in RECIPES[title].blocks:
        if lang == "json":
            assert json.loads(text)["claims_to_headers"].items() <= claims_to_headers.items()
