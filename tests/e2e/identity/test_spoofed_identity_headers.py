"""Scenario 6: a client cannot forge the identity headers the filter sets. They are removed
from every request (allowed, anonymous or denied) before the filter adds the real ones, and
from the request's trailers."""

from __future__ import annotations

import pytest

from support import tokens as tk
from support.assertions import assert_allowed, assert_missing
from support.authorizer_config import (
    CLAIM_HEADERS,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    self_minted_only_config,
)
from support.client import raw_exchange
from support.envoy import authorizer_bootstrap

FORGED = [
    ("x-cognito-sub", "evil"),
    ("X-Cognito-Username", "root"),  # header names are case-insensitive
    ("x-cognito-groups", "admins"),
    ("x-cognito-groups", "superusers"),  # and repeated
    ("x-cognito-token-use", "access"),
    ("x-cognito-client-id", "forged-client"),
]


def _no_forged_value_survives(seen) -> None:
    for name, value in FORGED:
        assert value not in seen.header_values(name), f"forged {name}: {value} reached upstream"


def test_forged_claim_headers_are_replaced_by_the_tokens_values(authorizer, upstream, signing_key):
    # payload: {"sub": <uuid>, "aud": TEST_CLIENT, "iss": TEST_ISSUER, "token_use": "id",
    #           "cognito:username": "dave", "cognito:groups": ["readers"], ...}
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "dave", ["readers"])
    token = tk.sign(signing_key, claims)

    resp = authorizer.request("/hello", [("Authorization", f"Bearer {token}"), *FORGED])

    seen = assert_allowed(resp, upstream)
    assert seen.header_values("x-cognito-sub") == [claims["sub"]]
    assert seen.header_values("x-cognito-username") == ["dave"]
    assert seen.header_values("x-cognito-groups") == ["readers"]
    assert seen.header_values("x-cognito-token-use") == ["id"]
    _no_forged_value_survives(seen)


def test_forged_header_for_absent_claim_is_removed(authorizer, upstream, signing_key):
    # payload: id token for "erin" with no "cognito:groups" claim and no "client_id"
    token = tk.sign(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, "erin"))

    resp = authorizer.request("/hello", [("Authorization", f"Bearer {token}"), *FORGED])

    seen = assert_allowed(resp, upstream)
    assert seen.header_values("x-cognito-groups") == []
    assert seen.header_values("x-cognito-client-id") == []
    _no_forged_value_survives(seen)


def test_forged_claim_headers_with_moto_token_are_replaced(authorizer, upstream, alice):
    _, claims, _ = tk.split(alice.id_token)

    resp = authorizer.request("/hello", [("Authorization", f"Bearer {alice.id_token}"), *FORGED])

    seen = assert_allowed(resp, upstream)
    assert seen.header_values("x-cognito-sub") == [claims["sub"]]
    assert seen.header_values("x-cognito-username") == ["alice"]
    # alice really is in "admins": one value, the token's, not the forged "superusers".
    assert seen.header_values("x-cognito-groups") == ["admins"]
    assert seen.header_values("x-cognito-client-id") == []


def test_forged_claim_headers_without_token_get_401(authorizer, upstream):
    resp = authorizer.request("/hello", FORGED)

    assert_missing(resp, upstream)


@pytest.mark.parametrize("path", ["/public", "/public/page?x=1"])
def test_forged_claim_headers_are_removed_on_anonymous_routes(authorizer, upstream, path):
    resp = authorizer.request(path, FORGED)

    seen = assert_allowed(resp, upstream)
    for header in CLAIM_HEADERS.values():
        assert seen.header_values(header) == [], f"{header} reached an anonymous route"


def test_claim_values_with_line_breaks_are_sanitised(authorizer, upstream, signing_key):
    # payload: id token whose "cognito:username" is "mallory\r\nx-cognito-sub: evil"
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "mallory\r\nx-cognito-sub: evil")
    token = tk.sign(signing_key, claims)

    resp = authorizer.request("/hello", {"Authorization": f"Bearer {token}"})

    seen = assert_allowed(resp, upstream)
    assert seen.header_values("x-cognito-sub") == [claims["sub"]]
    for name, value in seen.headers:
        assert "\r" not in value and "\n" not in value, f"{name} carries a line break"
    assert seen.header("x-cognito-username").startswith("mallory")


# Envoy forwards headers with underscores by default, and CGI/WSGI/Rack/PHP servers read
# `x_cognito_sub` as `x-cognito-sub`: every spelling of an identity header is removed.
UNDERSCORED = [
    ("x_cognito_sub", "victim-uuid"),
    ("X_Cognito_Username", "victim"),
    ("x-cognito_groups", "admins"),
    ("x_cognito_authorizer_decision", "allowed"),
]


def _no_underscored_spelling_survives(seen) -> None:
    for name, value in UNDERSCORED:
        for sent, got in seen.headers:
            assert not (sent.replace("_", "-") == name.lower().replace("_", "-") and got == value), (
                f"forged {name}: {value} reached the upstream as {sent}"
            )


@pytest.mark.parametrize("path", ["/public", "/public/page?x=1"])
def test_underscored_identity_headers_are_removed_on_anonymous_routes(authorizer, upstream, path):
    resp = authorizer.request(path, UNDERSCORED)

    seen = assert_allowed(resp, upstream)
    _no_underscored_spelling_survives(seen)


def test_underscored_identity_headers_are_removed_on_authenticated_routes(
    authorizer, upstream, signing_key
):
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "dave", ["readers"])
    token = tk.sign(signing_key, claims)

    resp = authorizer.request("/hello", [("Authorization", f"Bearer {token}"), *UNDERSCORED])

    seen = assert_allowed(resp, upstream)
    _no_underscored_spelling_survives(seen)
    # Only the filter's own copy arrives, under its configured name.
    assert [v for n, v in seen.headers if n.replace("_", "-") == "x-cognito-sub"] == [
        claims["sub"]
    ]


# --- trailers -------------------------------------------------------------------------------

UPSTREAM_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@pytest.fixture(scope="module")
def trailers_envoy(bootstrap_envoys, wasm_path, upstream, jwks):
    """Envoy with HTTP/1.1 trailers on (`enable_trailers` downstream and towards the upstream;
    without it Envoy drops them itself), and `/public` anonymous."""
    config = self_minted_only_config(rules=[{"match": {"prefix": "/public"}, "allow": True}])
    on = {"enable_trailers": True}
    bootstrap = authorizer_bootstrap(
        wasm_path,
        config,
        upstream.port,
        {TEST_CLUSTER: jwks.port},
        hcm_overrides={"http_protocol_options": on},
    )
    for cluster in bootstrap["static_resources"]["clusters"]:
        if cluster["name"] == "upstream":
            cluster["typed_extension_protocol_options"] = {
                UPSTREAM_HTTP_OPTIONS: {
                    "@type": f"type.googleapis.com/{UPSTREAM_HTTP_OPTIONS}",
                    "explicit_http_config": {"http_protocol_options": on},
                }
            }
    return bootstrap_envoys(bootstrap, name="trailers")


def chunked_with_trailers(path: str, headers: dict[str, str], trailers: list[tuple[str, str]]):
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    tail = "".join(f"{name}: {value}\r\n" for name, value in trailers)
    return (
        f"POST {path} HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n{head}\r\n"
        f"5\r\nhello\r\n0\r\n{tail}\r\n"
    ).encode()


FORGED_TRAILERS = [
    ("x-cognito-sub", "evil"),
    ("X_Cognito_Groups", "admins"),
    ("X-Cognito-Username", "root"),
    ("x-checksum", "abc"),  # not an identity header: it stays
]


@pytest.mark.parametrize("path, authenticated", [("/hello", True), ("/public/x", False)])
def test_identity_headers_sent_as_trailers_are_removed(
    trailers_envoy, upstream, signing_key, path, authenticated
):
    """A chunked HTTP/1.1 (or HTTP/2) request may carry header fields after its body; the
    client's copies of identity headers are removed there too, on every route."""
    headers = {}
    if authenticated:
        token = tk.sign(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, "dave", ["readers"]))
        headers["Authorization"] = f"Bearer {token}"
    data = chunked_with_trailers(path, headers, FORGED_TRAILERS)

    status, _ = raw_exchange(trailers_envoy.port, data)

    assert status == 200
    [seen] = upstream.requests
    assert seen.trailers == (("x-checksum", "abc"),), seen.trailers
    if authenticated:
        assert seen.header_values("x-cognito-username") == ["dave"]
