"""Per-route rules (README "rules entries"): the first rule whose match fits decides;
`prefix` covers whole segments, `exact` one path, `path_template` `{id}` one segment and `**`
the rest; `methods` and `headers` narrow a match; `allow` is anonymous access; `require`
checks scopes (any / all, from Cognito's `scope` or another issuer's `scp`), groups (any /
all), claim values and token_use. A failed requirement is a 403 whose challenge names the
scopes only when the rule requires scopes. The query string never takes part in matching.

One Envoy for the module: the self-minted Cognito pool `test`, and `oidc`, a non-Cognito
OIDC issuer (`"token_use": null`, explicit issuer and jwks_uri) signed with the same key."""

from __future__ import annotations

import time
import uuid

import pytest

from support import tokens as tk
from support.assertions import (
    Outcomes,
    assert_allowed,
    assert_forbidden,
    assert_invalid,
    assert_missing,
)
from support.authorizer_config import (
    CLAIM_HEADERS,
    TEST_CLUSTER,
    jwks_uri,
    self_minted_pool,
)
from support.scenarios import bearer, mint_access, mint_id

OIDC_POOL_ID = "us-east-1_OidcIssuer"
OIDC_ISSUER = "https://idp.example.test/realms/api"
OIDC_CLIENT = "oidc-api-client"

RULES = [
    {"match": {"exact": "/healthz"}, "allow": True},
    {"match": {"prefix": "/public"}, "allow": True},
    # First match wins: the more specific rule must come first to have any effect...
    {"match": {"prefix": "/shop/checkout"}, "require": {"groups": ["buyers"]}},
    {"match": {"prefix": "/shop"}, "allow": True},
    {"match": {"prefix": "/admin"}, "require": {"groups": ["admins"]}},
    # ...and one after a broader rule is never reached.
    {"match": {"prefix": "/admin/open"}, "allow": True},
    {"match": {"prefix": "/docs", "methods": ["GET"]}, "allow": True},
    {"match": {"prefix": "/orders", "methods": ["GET"]}, "require": {"groups": ["auditors"]}},
    {"match": {"prefix": "/orders", "methods": ["DELETE"]}, "require": {"groups": ["admins"]}},
    {"match": {"prefix": "/orders"}, "require": {}},
    {
        "match": {"prefix": "/tenant", "headers": {"x-tenant": "acme"}},
        "require": {"claims": {"custom:tenant": ["acme"]}},
    },
    {"match": {"prefix": "/tenant"}, "require": {"groups": ["tenant-admins"]}},
    {"match": {"prefix": "/partner", "headers": {"x-partner": "yes"}}, "allow": True},
    {"match": {"path_template": "/users/{id}"}, "require": {"token_use": "id"}},
    {"match": {"path_template": "/files/**"}, "require": {"token_use": "access"}},
    {"match": {"prefix": "/reports"}, "require": {"scopes": ["reports/read", "reports/admin"]}},
    {"match": {"prefix": "/billing"}, "require": {"scopes_all": ["billing/read", "billing/write"]}},
    {"match": {"prefix": "/ops"}, "require": {"groups_all": ["ops", "oncall"]}},
    {"match": {"prefix": "/eu"},
     "require": {"claims": {"custom:region": ["eu-west-1", "eu-central-1"]}}},
    {"match": {"prefix": "/beta"}, "require": {"claims": {"features": ["beta"]}}},
    {"match": {"prefix": "/combo"}, "require": {"scopes": ["api/write"], "groups": ["admins"]}},
    {"match": {"prefix": "/anything"}, "require": {}},
]  # fmt: skip


@pytest.fixture(scope="module")
def envoy(module_envoys, jwks):
    config = {
        "user_pools": [
            self_minted_pool(),
            {
                "name": "oidc",
                "user_pool_id": OIDC_POOL_ID,
                "issuer": OIDC_ISSUER,
                "jwks_uri": jwks_uri(OIDC_POOL_ID),
                "client_ids": [OIDC_CLIENT],
                "token_use": None,
                "jwks_cluster": TEST_CLUSTER,
            },
        ],
        "rules": RULES,
        "claims_to_headers": CLAIM_HEADERS,
    }
    return module_envoys(config, {TEST_CLUSTER: jwks.port}, name="rules")


@pytest.fixture
def send(envoy, upstream):
    """send(path, token=None, method="GET", headers=()) with a fresh upstream record."""

    def go(path, token=None, method="GET", headers=()):
        upstream.clear()
        all_headers = [*(bearer(token).items() if token else ()), *headers]
        return envoy.request(path, all_headers, method=method)

    return go


def oidc_token(key, **claims) -> str:
    # payload: {"iss": OIDC_ISSUER, "aud": OIDC_CLIENT, "sub": <uuid>, "iat": now,
    #           "exp": now+3600, **claims} — no token_use, as other OIDC providers issue
    now = int(time.time())
    payload = {
        "iss": OIDC_ISSUER,
        "aud": OIDC_CLIENT,
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return tk.sign(key, payload)


# --- allow: anonymous routes ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/healthz?probe=1", "/public", "/public/a/b"])
def test_allow_rule_path_reaches_upstream_without_token(send, upstream, path):
    seen = assert_allowed(send(path), upstream)
    assert seen.path == path


@pytest.mark.parametrize("path", ["/healthz/", "/healthzx", "/healthz/deep", "/publicity"])
def test_path_near_an_allow_rule_needs_a_token(send, upstream, path):
    # exact is exact; a prefix covers whole segments only: both fall to the default rule.
    assert_missing(send(path), upstream)


def test_allow_rule_with_an_invalid_token_is_still_anonymous(send, upstream):
    """An anonymous route does not look at the token at all (it reaches the upstream
    untouched, and no identity is added)."""
    seen = assert_allowed(send("/public/x", token="not-a-jwt"), upstream)
    assert seen.header("x-cognito-sub") is None


# --- first match wins ----------------------------------------------------------------------


def test_specific_rule_before_broad_allow_rule_protects_its_prefix(send, upstream, signing_key):
    assert_missing(send("/shop/checkout"), upstream)
    assert_forbidden(send("/shop/checkout/pay", mint_id(signing_key, groups=["readers"])), upstream)
    assert_allowed(send("/shop/checkout", mint_id(signing_key, groups=["buyers"])), upstream)
    # the broad rule still serves the rest of /shop anonymously
    assert_allowed(send("/shop/items"), upstream)


def test_rule_after_a_broader_matching_rule_is_never_reached(send, upstream, signing_key):
    # /admin/open is allowed by rule 6, but rule 5 (/admin, groups admins) matches first.
    assert_missing(send("/admin/open"), upstream)
    assert_forbidden(send("/admin/open", mint_id(signing_key)), upstream)


# --- prefix: whole segments --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin", "/admin/", "/admin/users/1"])
def test_admin_prefix_refuses_token_without_admins_group(
    envoy, send, upstream, signing_key, path
):
    outcomes = Outcomes(envoy)
    token = mint_id(signing_key, groups=["readers"])

    assert_forbidden(send(path, token), upstream)
    assert outcomes.changes() == {"denied_forbidden": 1}


@pytest.mark.parametrize("path", ["/admin", "/admin/users/1"])
def test_admin_prefix_lets_admins_group_through(send, upstream, signing_key, path):
    seen = assert_allowed(send(path, mint_id(signing_key, groups=["readers", "admins"])), upstream)
    assert seen.header("x-cognito-groups") == "readers,admins"


def test_admin_prefix_does_not_cover_administrator(send, upstream, signing_key):
    """`/administrator` is another segment: the default rule (any valid token) applies."""
    assert_allowed(send("/administrator", mint_id(signing_key)), upstream)
    assert_missing(send("/administrator"), upstream)


# --- methods -----------------------------------------------------------------------------


def test_methods_matcher_allows_get_anonymously(send, upstream):
    assert_allowed(send("/docs/intro"), upstream)


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
def test_methods_matcher_other_methods_fall_to_default_rule(send, upstream, signing_key, method):
    assert_missing(send("/docs/intro", method=method), upstream)
    seen = assert_allowed(send("/docs/intro", mint_id(signing_key), method=method), upstream)
    assert seen.method == method


def test_a_get_rule_covers_head(send, upstream, signing_key):
    """Servers route HEAD to the GET handler (README "Rules")."""
    user = mint_id(signing_key, groups=["users"])
    resp = send("/orders/1", user, method="HEAD")
    assert resp.status == 403, resp.describe()  # a HEAD answer has no body
    assert upstream.requests == []
    auditor = mint_id(signing_key, groups=["auditors"])
    resp = send("/orders/1", auditor, method="HEAD")
    # The echo upstream has no HEAD handler (501): what matters is that Envoy routed it there.
    assert resp.status != 403 and resp.header("x-envoy-upstream-service-time"), resp.describe()


@pytest.mark.parametrize(
    "method, headers, path",
    [
        ("delete", [], "/orders/1"),
        ("POST", [("x-http-method-override", "DELETE")], "/orders/1"),
        ("POST", [("x-http-method", "delete")], "/orders/1"),
        ("POST", [("x-method-override", "DELETE")], "/orders/1"),
        ("POST", [], "/orders/1?_method=DELETE"),
    ],
    ids=["lower-case", "x-http-method-override", "x-http-method", "x-method-override", "_method"],
)
def test_a_method_the_upstream_may_act_on_selects_its_rule(
    send, upstream, signing_key, method, headers, path
):
    """A DELETE spelled in lower case, or asked for by an override header or `_method`, needs
    the DELETE rule's group; without the override the same POST needs any token."""
    user = mint_id(signing_key, groups=["users"])
    resp = send(path, user, method=method, headers=headers)
    # Envoy 1.40 refuses a lower-case method on HTTP/1.1 itself (400); either way the
    # upstream never sees it.
    assert resp.status in (400, 403), resp.describe()
    assert upstream.requests == []
    admin = mint_id(signing_key, groups=["admins"])
    if resp.status == 403:
        assert_allowed(send(path, admin, method=method, headers=headers), upstream)
    assert_allowed(send("/orders/1", user, method="POST"), upstream)


# --- headers -----------------------------------------------------------------------------


def test_headers_matcher_applies_rule_when_header_has_exact_value(send, upstream, signing_key):
    acme = mint_id(signing_key, **{"custom:tenant": "acme"})
    globex = mint_id(signing_key, **{"custom:tenant": "globex"})

    assert_allowed(send("/tenant/1", acme, headers=[("x-tenant", "acme")]), upstream)
    assert_forbidden(send("/tenant/1", globex, headers=[("x-tenant", "acme")]), upstream)


@pytest.mark.parametrize(
    "headers", [[], [("x-tenant", "acme2")]], ids=["absent", "other"]
)
def test_headers_matcher_without_exact_value_falls_to_next_rule(
    send, upstream, signing_key, headers
):
    acme = mint_id(signing_key, **{"custom:tenant": "acme"})
    tenant_admin = mint_id(signing_key, groups=["tenant-admins"])

    # the next /tenant rule asks for the group tenant-admins, which the acme token lacks
    assert_forbidden(send("/tenant/1", acme, headers=headers), upstream)
    assert_allowed(send("/tenant/1", tenant_admin, headers=headers), upstream)


@pytest.mark.parametrize(
    "headers",
    [
        [("x-tenant", "other"), ("x-tenant", "acme")],
        [("x-tenant", "acme"), ("x-tenant", "other")],
        [("x-tenant", "other, acme")],
        [("x-tenant", "ACME")],
        [("x_tenant", "acme")],
    ],
    ids=["acme-last", "acme-first", "acme-in-a-list", "case", "underscore"],
)
def test_a_header_read_several_ways_needs_every_rule_it_selects(
    send, upstream, signing_key, headers
):
    """Some upstream reads `acme` (the last value, a list element, case folded, `x_tenant` as
    `x-tenant`) and another reads some other tenant: the token must meet the acme rule and the
    next one, so that neither reading picks the more lenient rule (README "Rules")."""
    acme = mint_id(signing_key, **{"custom:tenant": "acme"})
    tenant_admin = mint_id(signing_key, groups=["tenant-admins"], **{"custom:tenant": "globex"})
    both = mint_id(signing_key, groups=["tenant-admins"], **{"custom:tenant": "acme"})

    assert_forbidden(send("/tenant/1", acme, headers=headers), upstream)
    assert_forbidden(send("/tenant/1", tenant_admin, headers=headers), upstream)
    assert_allowed(send("/tenant/1", both, headers=headers), upstream)


def test_headers_matcher_of_an_allow_rule_needs_every_value_to_match(send, upstream):
    assert_allowed(send("/partner/x", headers=[("x-partner", "yes")]), upstream)
    assert_allowed(send("/partner/x", headers=[("x-partner", "yes"), ("x-partner", "yes")]), upstream)
    for headers in (
        [("x-partner", "no"), ("x-partner", "yes")],
        [("x-partner", "yes"), ("x-partner", "no")],
        [("x-partner", "yes,no")],
    ):
        assert_missing(send("/partner/x", headers=headers), upstream)


# --- path_template -----------------------------------------------------------------------


def test_template_single_segment_requires_id_token(send, upstream, signing_key):
    assert_allowed(send("/users/42", mint_id(signing_key)), upstream)
    assert_forbidden(send("/users/42", mint_access(signing_key)), upstream)
    assert_missing(send("/users/42"), upstream)


@pytest.mark.parametrize("path", ["/users/42/extra", "/users", "/users/"])
def test_template_single_segment_does_not_match_other_depths(send, upstream, signing_key, path):
    # the default rule: an access token is as good as an id token there
    assert_allowed(send(path, mint_access(signing_key)), upstream)


@pytest.mark.parametrize("path", ["/files", "/files/a", "/files/a/b/c.txt"])
def test_template_rest_covers_any_depth(send, upstream, signing_key, path):
    assert_allowed(send(path, mint_access(signing_key)), upstream)
    assert_forbidden(send(path, mint_id(signing_key)), upstream)


def test_template_rest_does_not_cover_longer_first_segment(send, upstream, signing_key):
    assert_allowed(send("/filesystem", mint_id(signing_key)), upstream)


# --- scopes --------------------------------------------------------------------------------

REPORTS_SCOPES = "reports/read reports/admin"


@pytest.mark.parametrize(
    "scope",
    ["reports/read", "reports/admin", "openid reports/read email"],
    ids=["first", "second", "among-others"],
)
def test_scopes_any_one_of_them_is_enough(send, upstream, signing_key, scope):
    seen = assert_allowed(send("/reports/q1", mint_access(signing_key, scope=scope)), upstream)
    assert seen.header("x-cognito-token-use") == "access"


@pytest.mark.parametrize(
    "scope",
    ["aws.cognito.signin.user.admin", "reports/reader", "reports", "REPORTS/READ", ""],
    ids=["cognito-default", "longer", "shorter", "case", "empty"],
)
def test_scopes_any_without_a_listed_scope_is_forbidden_naming_the_scopes(
    send, upstream, signing_key, scope
):
    resp = send("/reports/q1", mint_access(signing_key, scope=scope))

    assert_forbidden(resp, upstream, scope=REPORTS_SCOPES)


def test_scope_rule_refuses_id_token_even_with_scope_claim(send, upstream, signing_key):
    """Requiring scopes implies an access token (Cognito puts scopes only there)."""
    token = mint_id(signing_key, scope="reports/read")

    assert_forbidden(send("/reports/q1", token), upstream, scope=REPORTS_SCOPES)


def test_scopes_all_needs_every_scope(send, upstream, signing_key):
    both = mint_access(signing_key, scope="billing/write billing/read")
    one = mint_access(signing_key, scope="billing/read")

    assert_allowed(send("/billing", both), upstream)
    assert_forbidden(send("/billing", one), upstream, scope="billing/read billing/write")


def test_scope_rule_with_missing_token_is_plain_401(send, upstream):
    # no insufficient_scope challenge before there is a token at all
    assert_missing(send("/reports/q1"), upstream)


# --- scopes from another OIDC issuer (`scp`) ---------------------------------------------


@pytest.mark.parametrize(
    "scp", [["reports/read"], ["x", "reports/admin"], "reports/read", "x reports/admin"],
    ids=["list", "list-second", "string", "space-separated-string"],
)
def test_scp_claim_of_oidc_issuer_satisfies_scopes_rule(send, upstream, signing_key, scp):
    """README "rules entries" and "Paths": scopes come from `scope` (Cognito) or `scp` (a list or a string, other OIDC
    providers): an `scp` token of a `"token_use": null` pool must pass a scopes rule."""
    token = oidc_token(signing_key, scp=scp)

    assert_allowed(send("/reports/q1", token), upstream)


def test_oidc_token_without_listed_scp_is_forbidden(send, upstream, signing_key):
    token = oidc_token(signing_key, scp=["profile"])

    assert_forbidden(send("/reports/q1", token), upstream, scope=REPORTS_SCOPES)


def test_oidc_token_passes_default_rule(send, upstream, signing_key):
    seen = assert_allowed(send("/anything", oidc_token(signing_key)), upstream)
    assert seen.header("x-cognito-token-use") is None


def test_oidc_token_for_another_audience_is_invalid(send, upstream, signing_key):
    assert_invalid(send("/anything", oidc_token(signing_key, aud="someone-else")), upstream)


# --- groups --------------------------------------------------------------------------------


def test_groups_all_needs_every_group(send, upstream, signing_key):
    assert_allowed(send("/ops", mint_id(signing_key, groups=["oncall", "ops", "x"])), upstream)
    assert_forbidden(send("/ops", mint_id(signing_key, groups=["ops"])), upstream)
    assert_forbidden(send("/ops", mint_id(signing_key)), upstream)  # no cognito:groups at all


def test_groups_rule_works_with_access_tokens_too(send, upstream, signing_key):
    assert_allowed(send("/admin", mint_access(signing_key, groups=["admins"])), upstream)


# --- claims ------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["eu-west-1", "eu-central-1"])
def test_string_claim_holding_an_accepted_value_passes(send, upstream, signing_key, region):
    assert_allowed(send("/eu", mint_id(signing_key, **{"custom:region": region})), upstream)


@pytest.mark.parametrize(
    "claims", [{"custom:region": "us-east-1"}, {"custom:region": "EU-WEST-1"}, {}],
    ids=["other-value", "case", "absent"],
)
def test_string_claim_without_an_accepted_value_is_forbidden(send, upstream, signing_key, claims):
    assert_forbidden(send("/eu", mint_id(signing_key, **claims)), upstream)


def test_list_claim_holding_an_accepted_value_passes(send, upstream, signing_key):
    token = mint_id(signing_key, features=["alpha", "beta"])

    assert_allowed(send("/beta/x", token), upstream)


@pytest.mark.parametrize("features", [["alpha"], [], "alpha"], ids=["list", "empty", "string"])
def test_list_claim_without_accepted_value_is_forbidden(send, upstream, signing_key, features):
    assert_forbidden(send("/beta/x", mint_id(signing_key, features=features)), upstream)


# --- every kind a require lists must hold --------------------------------------------------


def test_scopes_and_groups_both_required(send, upstream, signing_key):
    ok = mint_access(signing_key, scope="api/write", groups=["admins"])
    scope_only = mint_access(signing_key, scope="api/write", groups=["readers"])
    group_only = mint_access(signing_key, scope="api/read", groups=["admins"])

    assert_allowed(send("/combo", ok), upstream)
    # the rule requires scopes, so its challenge names them whichever kind failed
    assert_forbidden(send("/combo", scope_only), upstream, scope="api/write")
    assert_forbidden(send("/combo", group_only), upstream, scope="api/write")


def test_empty_require_means_any_valid_token(send, upstream, signing_key):
    assert_allowed(send("/anything", mint_id(signing_key)), upstream)
    assert_allowed(send("/anything", mint_access(signing_key)), upstream)
    assert_missing(send("/anything"), upstream)


# --- the query string is ignored ---------------------------------------------------------


def test_query_naming_an_allowed_path_does_not_open_a_protected_route(send, upstream, signing_key):
    assert_missing(send("/admin?next=/public"), upstream)
    assert_missing(send("/admin?/public"), upstream)
    assert_forbidden(send("/admin?x=/healthz", mint_id(signing_key)), upstream)


def test_query_does_not_close_an_allowed_route(send, upstream):
    seen = assert_allowed(send("/public/page?next=/admin"), upstream)
    assert seen.path == "/public/page?next=/admin"


def test_exact_rule_matches_with_query(send, upstream):
    assert_allowed(send("/healthz?full=1&x=/admin"), upstream)


def test_template_rule_matches_with_query(send, upstream, signing_key):
    assert_forbidden(send("/users/42?view=full", mint_access(signing_key)), upstream)
