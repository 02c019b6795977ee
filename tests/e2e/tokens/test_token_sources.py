"""Token sources (README "Configuration reference", token_sources): headers (any `Bearer`
spelling or raw, or an exact `prefix`), query parameters and cookies, in the configured list
that replaces the default; the same token in two sources is fine, two different tokens are
a 401 invalid; `forward_token: false` removes the token from where it was found — header,
query parameter (other parameters kept) or cookie (other cookies kept) — and `true` (the
default) keeps it.

Two Envoys for the module, with the same sources: one forwarding tokens (the default), one
with `"forward_token": false`; and one whose sources do not include `authorization`."""

from __future__ import annotations

import time

import pytest

from support import tokens as tk
from support.assertions import (
    Outcomes,
    assert_allowed,
    assert_invalid,
    assert_missing,
)
from support.authorizer_config import (
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    self_minted_only_config,
)
from support.scenarios import mint_access, mint_id

SOURCES = [
    {"header": "authorization"},
    {"header": "x-api-token"},
    {"header": "x-token", "prefix": "Token "},
    {"query": "access_token"},
    {"cookie": "id_token"},
]


@pytest.fixture(scope="module")
def forwarding(module_envoys, jwks):
    """Forwards tokens (forward_token defaults to true)."""
    config = self_minted_only_config(token_sources=SOURCES)
    return module_envoys(config, {TEST_CLUSTER: jwks.port}, name="forwarding")


@pytest.fixture(scope="module")
def stripping(module_envoys, jwks):
    config = self_minted_only_config(token_sources=SOURCES, forward_token=False)
    return module_envoys(config, {TEST_CLUSTER: jwks.port}, name="stripping")


@pytest.fixture(scope="module")
def stripping_everywhere(module_envoys, jwks):
    """forward_token: false with an anonymous route, CORS preflights and report mode."""
    rules = [{"match": {"prefix": "/public"}, "allow": True}]
    config = self_minted_only_config(
        token_sources=SOURCES, forward_token=False, rules=rules, cors_allow_origins=["*"]
    )
    report = dict(config, mode="report")
    return {
        "enforce": module_envoys(config, {TEST_CLUSTER: jwks.port}, name="stripping-enforce"),
        "report": module_envoys(report, {TEST_CLUSTER: jwks.port}, name="stripping-report"),
    }


@pytest.fixture(scope="module")
def query_and_cookie_only(module_envoys, jwks):
    """Sources listed cookie first: the list replaces the default `authorization`."""
    config = self_minted_only_config(token_sources=[{"cookie": "session"}, {"query": "token"}])
    return module_envoys(config, {TEST_CLUSTER: jwks.port}, name="query-and-cookie")


@pytest.fixture
def token(signing_key) -> str:
    return mint_id(signing_key, username="tess")


@pytest.fixture
def other_token(signing_key) -> str:
    """Another valid token (another user) of the same pool."""
    return mint_access(signing_key, username="uma")


def req(envoy, upstream, path="/items", headers=()):
    upstream.clear()
    return envoy.request(path, headers)


def req_filled(envoy, upstream, path: str, headers: dict[str, str], **tokens):
    """`req` with the placeholders of `path` and of the header values (`{t}`, `{o}`) filled
    in with `tokens`: the parametrised cases name where tokens go, not the tokens."""
    filled = {name: value.format(**tokens) for name, value in headers.items()}
    return req(envoy, upstream, path.format(**tokens), filled)


# --- each kind of source -----------------------------------------------------------------


@pytest.mark.parametrize(
    "template", ["{}", "Bearer {}", "bearer {}"], ids=["raw", "Bearer", "bearer"]
)
def test_extra_header_without_prefix_accepts_raw_or_bearer(forwarding, upstream, token, template):
    resp = req(forwarding, upstream, headers={"X-Api-Token": template.format(token)})

    seen = assert_allowed(resp, upstream)
    assert seen.header("x-cognito-username") == "tess"
    assert seen.header("x-api-token") == template.format(token)  # forwarded as sent


def test_extra_header_with_prefix_accepts_exact_prefix(forwarding, upstream, token):
    resp = req(forwarding, upstream, headers={"X-Token": f"Token {token}"})

    seen = assert_allowed(resp, upstream)
    assert seen.header("x-token") == f"Token {token}"


@pytest.mark.parametrize(
    "template", ["Bearer {}", "token {}", "TOKEN {}", "{}", "Token"],
    ids=["bearer-scheme", "lower-case", "upper-case", "raw", "prefix-alone"],
)
def test_extra_header_with_prefix_refuses_anything_else_as_no_token(
    forwarding, upstream, token, template
):
    outcomes = Outcomes(forwarding)

    assert_missing(req(forwarding, upstream, headers={"X-Token": template.format(token)}), upstream)
    assert outcomes.changes() == {"denied_missing": 1}


def test_query_parameter_token_is_accepted_and_forwarded(forwarding, upstream, token):
    path = f"/items?a=1&access_token={token}&b=2"

    seen = assert_allowed(req(forwarding, upstream, path), upstream)
    assert seen.path == path


def test_cookie_token_is_accepted_and_forwarded(forwarding, upstream, token):
    cookie = f"theme=dark; id_token={token}; lang=en"

    seen = assert_allowed(req(forwarding, upstream, headers={"Cookie": cookie}), upstream)
    assert seen.header("cookie") == cookie


def test_token_in_unconfigured_header_or_parameter_is_no_token(forwarding, upstream, token):
    assert_missing(req(forwarding, upstream, headers={"X-Auth": f"Bearer {token}"}), upstream)
    assert_missing(req(forwarding, upstream, f"/items?token={token}"), upstream)
    assert_missing(req(forwarding, upstream, headers={"Cookie": f"access_token={token}"}), upstream)


# --- the configured list replaces the default --------------------------------------------


def test_configured_sources_replace_the_authorization_default(
    query_and_cookie_only, upstream, token
):
    envoy = query_and_cookie_only

    assert_missing(req(envoy, upstream, headers={"Authorization": f"Bearer {token}"}), upstream)
    assert_allowed(req(envoy, upstream, f"/items?token={token}"), upstream)
    assert_allowed(req(envoy, upstream, headers={"Cookie": f"session={token}"}), upstream)


def test_configured_order_does_not_let_a_later_source_override_an_earlier_one(
    query_and_cookie_only, upstream, token, other_token
):
    """Order is not precedence: a token in the first source (cookie) and another one in the
    second (query) is refused, whichever is valid."""
    envoy = query_and_cookie_only

    resp = req(envoy, upstream, f"/items?token={other_token}", {"Cookie": f"session={token}"})

    assert_invalid(resp, upstream)


# --- two sources -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/items?access_token={t}", {"Authorization": "Bearer {t}"}),
        ("/items", {"Authorization": "Bearer {t}", "Cookie": "id_token={t}"}),
        ("/items", {"X-Api-Token": "{t}", "X-Token": "Token {t}"}),
        ("/items?access_token={t}&access_token={t}", {}),
    ],
    ids=["header+query", "header+cookie", "two-headers", "query-twice"],
)
def test_same_token_in_two_sources_is_allowed(forwarding, upstream, token, path, headers):
    resp = req_filled(forwarding, upstream, path, headers, t=token)

    assert_allowed(resp, upstream)


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/items?access_token={o}", {"Authorization": "Bearer {t}"}),
        ("/items", {"Authorization": "Bearer {t}", "Cookie": "id_token={o}"}),
        ("/items", {"X-Api-Token": "{t}", "X-Token": "Token {o}"}),
        ("/items?access_token={t}&access_token={o}", {}),
        ("/items", {"Cookie": "id_token={t}; id_token={o}"}),
        ("/items", {"Authorization": "Bearer {t}", "Cookie": "id_token=garbage"}),
        # PHP reads access.token, access token and access[token as access_token
        ("/items?access_token={t}&access.token={o}", {}),
        ("/items?access_token={t}&access+token={o}", {}),
        ("/items?access_token={t}&access[token={o}", {}),
    ],
    ids=["header+query", "header+cookie", "two-headers", "query-twice", "cookie-twice",
         "valid+garbage", "query-php-dot", "query-php-space", "query-php-bracket"],
)  # fmt: skip
def test_different_tokens_in_two_sources_are_invalid(
    forwarding, upstream, token, other_token, path, headers
):
    outcomes = Outcomes(forwarding)

    resp = req_filled(forwarding, upstream, path, headers, t=token, o=other_token)

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}


# --- forward_token: false ----------------------------------------------------------------


@pytest.mark.parametrize(
    "header,template",
    [("Authorization", "Bearer {}"), ("X-Api-Token", "{}"), ("X-Token", "Token {}")],
)
def test_forward_token_false_removes_the_token_header(
    stripping, upstream, token, header, template
):
    headers = {header: template.format(token), "X-Other": "kept"}

    seen = assert_allowed(req(stripping, upstream, headers=headers), upstream)

    assert seen.header(header) is None
    assert seen.header("x-other") == "kept"
    assert seen.header("x-cognito-username") == "tess"


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/items?a=1&access_token={t}&b=2", "/items?a=1&b=2"),
        ("/items?access_token={t}", "/items"),
        ("/items?access_token={t}&b=x%20y", "/items?b=x%20y"),
        ("/items/42?z=&access_token={t}", "/items/42?z="),
        ("/items?access.token={t}&b=2", "/items?b=2"),
    ],
    ids=["middle", "only", "first", "empty-other", "php-spelling"],
)
def test_forward_token_false_removes_only_the_token_parameter(
    stripping, upstream, token, path, expected
):
    seen = assert_allowed(req_filled(stripping, upstream, path, {}, t=token), upstream)

    assert seen.path == expected


@pytest.mark.parametrize(
    "cookie,expected",
    [
        ("theme=dark; id_token={t}; lang=en", "theme=dark; lang=en"),
        ("id_token={t}; lang=en", "lang=en"),
        ("id_token={t}", None),
    ],
    ids=["middle", "first", "only"],
)
def test_forward_token_false_removes_only_the_token_cookie(
    stripping, upstream, token, cookie, expected
):
    seen = assert_allowed(
        req(stripping, upstream, headers={"Cookie": cookie.format(t=token)}), upstream
    )

    assert seen.header("cookie") == expected


def test_forward_token_false_removes_the_token_from_every_source_that_held_it(
    stripping, upstream, token
):
    headers = {"Authorization": f"Bearer {token}", "Cookie": f"id_token={token}; a=b"}

    resp = req(stripping, upstream, f"/items?access_token={token}&c=d", headers)

    seen = assert_allowed(resp, upstream)

    assert seen.header("authorization") is None
    assert seen.header("cookie") == "a=b"
    assert seen.path == "/items?c=d"
    assert all(token not in value for _, value in seen.headers)


def test_forward_token_false_leaves_requests_without_token_untouched_when_refused(
    stripping, upstream
):
    # nothing to strip on a refusal: it never reaches the upstream
    assert_missing(req(stripping, upstream, "/items?access_token="), upstream)


def test_forward_token_true_keeps_the_token_in_every_source(forwarding, upstream, token):
    headers = {"Authorization": f"Bearer {token}", "Cookie": f"id_token={token}; a=b"}
    path = f"/items?access_token={token}&c=d"

    seen = assert_allowed(req(forwarding, upstream, path, headers), upstream)

    assert seen.header("authorization") == f"Bearer {token}"
    assert seen.header("cookie") == f"id_token={token}; a=b"
    assert seen.path == path


# --- repeated headers: every value is a source -------------------------------------------
#
# HTTP/1.1 clients may repeat a header. Envoy joins repeated `authorization` headers into
# one value, but keeps other repeated headers (`cookie` included) as separate fields, and
# forwards them all. A second field is one more place the upstream may read a token from.


def forged_admin_token() -> str:
    # payload: id token for "root" in group admins, `alg: none`, no signature — what an
    # attacker would hope an upstream decodes without verifying
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "root", ["admins"])
    return tk.craft({"alg": "none", "kid": "x"}, claims)


@pytest.mark.parametrize(
    "name,template", [("X-Api-Token", "{}"), ("X-Token", "Token {}")], ids=["raw", "prefixed"]
)
def test_repeated_token_header_with_a_different_second_token_is_invalid(
    forwarding, upstream, token, name, template
):
    headers = [(name, template.format(token)), (name, template.format(forged_admin_token()))]

    assert_invalid(req(forwarding, upstream, headers=headers), upstream)


@pytest.mark.parametrize(
    "name,template", [("X-Api-Token", "{}"), ("X-Token", "Token {}")], ids=["raw", "prefixed"]
)
def test_repeated_token_header_with_the_same_token_is_allowed(
    forwarding, upstream, token, name, template
):
    headers = [(name, template.format(token)), (name, template.format(token))]

    assert_allowed(req(forwarding, upstream, headers=headers), upstream)


def test_second_cookie_header_with_a_different_token_is_invalid(forwarding, upstream, token):
    headers = [("Cookie", f"id_token={token}"), ("Cookie", f"id_token={forged_admin_token()}")]

    assert_invalid(req(forwarding, upstream, headers=headers), upstream)


def test_cookie_header_with_a_token_other_than_the_authorization_one_is_invalid(
    forwarding, upstream, token
):
    headers = [
        ("Authorization", f"Bearer {token}"),
        ("Cookie", "theme=dark"),
        ("Cookie", f"id_token={forged_admin_token()}"),
    ]

    assert_invalid(req(forwarding, upstream, headers=headers), upstream)


def test_token_cookie_in_a_second_cookie_header_is_found(forwarding, upstream, token):
    headers = [("Cookie", "theme=dark"), ("Cookie", f"id_token={token}")]

    seen = assert_allowed(req(forwarding, upstream, headers=headers), upstream)
    assert seen.header("x-cognito-username") == "tess"


def test_forward_token_false_removes_the_token_cookie_from_every_cookie_header(
    stripping, upstream, token
):
    headers = [("Cookie", "theme=dark"), ("Cookie", f"id_token={token}; lang=en")]

    seen = assert_allowed(req(stripping, upstream, headers=headers), upstream)

    cookies = "; ".join(seen.header_values("cookie"))
    assert token not in cookies
    assert "theme=dark" in cookies and "lang=en" in cookies


# --- forward_token: false wherever a request continues ----------------------------------


def _carries_no_token(seen, token) -> None:
    for name, value in seen.headers:
        assert token not in value, f"the token reached the upstream in {name}"
    assert token not in (seen.raw_path or ""), "the token reached the upstream in the path"


TOKEN_PLACES = {
    "header": lambda t: ("/public/x", {"Authorization": f"Bearer {t}"}),
    "query": lambda t: (f"/public/x?a=1&access_token={t}", {}),
    "cookie": lambda t: ("/public/x", {"Cookie": f"a=1; id_token={t}"}),
    "two-disagreeing": lambda t: (f"/public/x?access_token={t}", {"X-Api-Token": t + "x"}),
}


@pytest.mark.parametrize("place", list(TOKEN_PLACES))
def test_forward_token_false_strips_the_token_on_anonymous_routes(
    stripping_everywhere, upstream, token, place
):
    path, headers = TOKEN_PLACES[place](token)

    seen = assert_allowed(req(stripping_everywhere["enforce"], upstream, path, headers), upstream)

    _carries_no_token(seen, token)
    if place == "query":
        assert seen.raw_path == "/public/x?a=1"


def test_forward_token_false_strips_the_token_from_cors_preflights(
    stripping_everywhere, upstream, token
):
    headers = {
        "Origin": "https://app.example.test",
        "Access-Control-Request-Method": "POST",
        "Authorization": f"Bearer {token}",
    }
    upstream.clear()
    resp = stripping_everywhere["enforce"].request("/items", headers, method="OPTIONS")

    seen = assert_allowed(resp, upstream)
    _carries_no_token(seen, token)


@pytest.mark.parametrize(
    "path", ["/items", "/items?access_token={t}"], ids=["header", "query"]
)
def test_forward_token_false_strips_the_token_from_report_mode_refusals(
    stripping_everywhere, upstream, signing_key, path
):
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "old", now=int(time.time()) - 7200)
    expired = tk.sign(signing_key, claims)
    headers = {} if "?" in path else {"Authorization": f"Bearer {expired}"}

    seen = assert_allowed(
        req(stripping_everywhere["report"], upstream, path.format(t=expired), headers), upstream
    )

    assert seen.header("x-cognito-authorizer-decision") == "expired"
    _carries_no_token(seen, expired)
