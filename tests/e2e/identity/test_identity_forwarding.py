"""Identity for the upstream (README "Identity for the upstream"): claim headers render strings as they are, arrays
joined with `,`, numbers and booleans as JSON, and never carry a control character; the
payload header is the token's own payload segment (base64url JSON of the verified payload);
client copies of every header the filter sets are removed.

One Envoy for the module: moto's pool and the self-minted pool, many claim headers, and
`payload_header`."""

from __future__ import annotations

import json

import pytest

from support import tokens as tk
from support.assertions import assert_allowed, assert_missing
from support.authorizer_config import (
    MOTO_CLUSTER,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    moto_pool,
    self_minted_pool,
)
from support.scenarios import bearer, mint_access, mint_id

PAYLOAD_HEADER = "x-jwt-payload"
HEADERS = {
    "sub": "x-cognito-sub",
    "cognito:username": "x-cognito-username",
    "username": "x-cognito-access-username",
    "cognito:groups": "x-cognito-groups",
    "scope": "x-cognito-scope",
    "email_verified": "x-email-verified",
    "custom:count": "x-count",
    "custom:ratio": "x-ratio",
    "custom:flag": "x-flag",
    "custom:list": "x-list",
    "custom:note": "x-note",
}
# Every character Rust's `char::is_control` covers: C0, DEL and C1.
CONTROL_CHARS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]


@pytest.fixture(scope="module")
def envoy(module_envoys, cognito, moto, jwks):
    config = {
        "user_pools": [moto_pool(cognito.pool_id, cognito.client_id), self_minted_pool()],
        "rules": [{"match": {"prefix": "/public"}, "allow": True}],
        "claims_to_headers": HEADERS,
        "payload_header": PAYLOAD_HEADER,
    }
    return module_envoys(
        config, {MOTO_CLUSTER: moto.port, TEST_CLUSTER: jwks.port}, name="identity"
    )


def upstream_sees(envoy, upstream, token, path="/hello", extra=()):
    upstream.clear()
    resp = envoy.request(path, [*bearer(token).items(), *extra])
    return assert_allowed(resp, upstream)


def utf8(value: str) -> str:
    """The echo upstream (http.server) reads header bytes as latin-1: recover the UTF-8."""
    return value.encode("latin-1").decode("utf-8")


# --- how claim values are rendered -------------------------------------------------------


@pytest.mark.parametrize(
    "groups,expected",
    [(["admins"], "admins"), (["admins", "readers", "ops"], "admins,readers,ops"),
     (["a b", "c"], "a b,c")],
    ids=["one", "three", "with-space"],
)  # fmt: skip
def test_list_claim_is_joined_with_commas(envoy, upstream, signing_key, groups, expected):
    seen = upstream_sees(envoy, upstream, mint_id(signing_key, groups=groups))

    assert seen.header("x-cognito-groups") == expected


def test_list_of_mixed_values_renders_non_strings_as_json(envoy, upstream, signing_key):
    token = mint_id(signing_key, **{"custom:list": ["a", 1, True, 2.5]})

    assert upstream_sees(envoy, upstream, token).header("x-list") == "a,1,true,2.5"


@pytest.mark.parametrize(
    "value,expected",
    [(42, "42"), (0, "0"), (-7, "-7"), (12345678901, "12345678901"), (2.5, "2.5")],
)
def test_number_claim_is_rendered_as_json(envoy, upstream, signing_key, value, expected):
    token = mint_id(signing_key, **{"custom:count": value})

    assert upstream_sees(envoy, upstream, token).header("x-count") == expected


@pytest.mark.parametrize("value,expected", [(True, "true"), (False, "false")])
def test_boolean_claim_is_rendered_as_json(envoy, upstream, signing_key, value, expected):
    token = mint_id(signing_key, email_verified=value, **{"custom:flag": value})

    seen = upstream_sees(envoy, upstream, token)
    assert seen.header("x-email-verified") == expected
    assert seen.header("x-flag") == expected


def test_string_claim_is_passed_as_it_is(envoy, upstream, signing_key):
    token = mint_id(signing_key, **{"custom:note": "Ann-Marie O'Neil <ann@example.com>; x=1"})

    seen = upstream_sees(envoy, upstream, token)
    assert seen.header("x-note") == "Ann-Marie O'Neil <ann@example.com>; x=1"


def test_non_ascii_claim_reaches_upstream_as_utf8(envoy, upstream, signing_key):
    token = mint_id(signing_key, username="josé", **{"custom:note": "Zürich 東京"})

    seen = upstream_sees(envoy, upstream, token)
    assert utf8(seen.header("x-cognito-username")) == "josé"
    assert utf8(seen.header("x-note")) == "Zürich 東京"


def test_null_or_absent_claim_adds_no_header_and_client_copy_is_removed(
    envoy, upstream, signing_key
):
    token = mint_id(signing_key, **{"custom:count": None})
    forged = [("x-count", "999"), ("x-ratio", "1.0"), ("x-list", "admins")]

    seen = upstream_sees(envoy, upstream, token, extra=forged)
    for name, _ in forged:
        assert seen.header_values(name) == []


def test_moto_access_token_username_and_scope_headers(envoy, upstream, alice):
    seen = upstream_sees(envoy, upstream, alice.access_token)

    assert seen.header("x-cognito-access-username") == "alice"
    assert seen.header("x-cognito-username") is None
    assert seen.header("x-cognito-scope") == tk.COGNITO_SCOPE
    assert seen.header("x-cognito-groups") == "admins"


def test_scope_claim_is_passed_as_the_space_separated_string(envoy, upstream, signing_key):
    token = mint_access(signing_key, scope="api/read api/write openid")

    assert upstream_sees(envoy, upstream, token).header("x-cognito-scope") == (
        "api/read api/write openid"
    )


# --- control characters never reach a header --------------------------------------------


def _no_control_characters(seen) -> None:
    for name, value in seen.headers:
        bad = [hex(ord(c)) for c in value if c in CONTROL_CHARS]
        assert not bad, f"{name} carries control characters {bad}: {value!r}"


@pytest.mark.parametrize(
    "value,expected",
    [
        ("mallory\r\nx-injected: 1", "malloryx-injected: 1"),
        ("a\nb", "ab"),
        ("a\rb", "ab"),
        ("nul\x00byte", "nulbyte"),
        ("tab\there", "tabhere"),
        ("esc\x1b[31mred", "esc[31mred"),
        ("del\x7fete", "delete"),
    ],
    ids=["crlf-injection", "lf", "cr", "nul", "tab", "escape", "del"],
)
def test_control_characters_are_removed_from_string_claims(
    envoy, upstream, signing_key, value, expected
):
    token = mint_id(signing_key, **{"custom:note": value})

    seen = upstream_sees(envoy, upstream, token)

    assert seen.header("x-note") == expected
    assert seen.header_values("x-injected") == []
    _no_control_characters(seen)


def test_c1_control_characters_are_removed(envoy, upstream, signing_key):
    # U+0085 (NEL) and U+009B (CSI) are line/escape controls some parsers honour
    token = mint_id(signing_key, **{"custom:note": "a\u0085b\u009bc"})

    seen = upstream_sees(envoy, upstream, token)

    assert utf8(seen.header("x-note")) == "abc"


def test_control_characters_are_removed_from_list_claims_and_usernames(
    envoy, upstream, signing_key
):
    token = mint_id(
        signing_key,
        username="eve\r\nx-cognito-groups: admins",
        groups=["readers\r\nx-injected: 1", "ops\x00"],
    )

    seen = upstream_sees(envoy, upstream, token)

    assert seen.header("x-cognito-username") == "evex-cognito-groups: admins"
    assert seen.header_values("x-cognito-groups") == ["readersx-injected: 1,ops"]
    assert seen.header_values("x-injected") == []
    _no_control_characters(seen)


# --- payload header ----------------------------------------------------------------------


def test_payload_header_is_the_tokens_payload_segment(envoy, upstream, signing_key):
    # payload: an id token of the self-minted pool with a non-ASCII custom claim
    claims = {**tk.id_claims(TEST_ISSUER, TEST_CLIENT), "custom:note": "ünïcode"}
    token = tk.sign(signing_key, claims)

    seen = upstream_sees(envoy, upstream, token)

    payload = seen.header(PAYLOAD_HEADER)
    assert payload == token.split(".")[1]
    assert json.loads(tk.b64url_decode(payload)) == claims


@pytest.mark.parametrize("which", ["id_token", "access_token"])
def test_payload_header_of_moto_tokens_decodes_to_their_claims(envoy, upstream, alice, which):
    token = getattr(alice, which)
    _, claims, _ = tk.split(token)

    seen = upstream_sees(envoy, upstream, token)

    assert seen.header(PAYLOAD_HEADER) == token.split(".")[1]
    assert json.loads(tk.b64url_decode(seen.header(PAYLOAD_HEADER))) == claims


def test_forged_payload_header_is_replaced_by_the_real_one(envoy, upstream, signing_key):
    token = mint_id(signing_key, username="carol")
    forged_payload = tk.b64url_json({"sub": "admin", "cognito:groups": ["admins"]})
    forged = [(PAYLOAD_HEADER, forged_payload), ("X-JWT-Payload", "second")]

    seen = upstream_sees(envoy, upstream, token, extra=forged)

    assert seen.header_values(PAYLOAD_HEADER) == [token.split(".")[1]]


def test_forged_payload_header_is_removed_on_anonymous_routes(envoy, upstream):
    upstream.clear()
    resp = envoy.request("/public/x", [(PAYLOAD_HEADER, tk.b64url_json({"sub": "admin"}))])

    seen = assert_allowed(resp, upstream)
    assert seen.header_values(PAYLOAD_HEADER) == []


def test_forged_payload_header_without_token_is_refused(envoy, upstream):
    upstream.clear()
    resp = envoy.request("/hello", [(PAYLOAD_HEADER, tk.b64url_json({"sub": "admin"}))])

    assert_missing(resp, upstream)
