"""Scenario 5: tokens an attacker would try. Every one is 401 invalid and never reaches the
upstream: tampering, `alg: none`, HS256 keyed with the public key, a foreign key, an
unknown kid (at most one refetch), malformed strings, and oversized tokens."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from support import tokens as tk
from support.assertions import Outcomes, assert_allowed, assert_invalid
from support.authorizer_config import (
    TEST_CLIENT,
    TEST_ISSUER,
    TEST_KID,
    TEST_POOL,
    jwks_path,
    self_minted_only_config,
)
from support.scenarios import bearer


@pytest.fixture
def valid_claims() -> dict:
    # payload: {"sub": <uuid>, "aud": TEST_CLIENT, "iss": TEST_ISSUER, "token_use": "id",
    #           "cognito:username": "alice", "cognito:groups": ["readers"], "exp": now+3600, ...}
    return tk.id_claims(TEST_ISSUER, TEST_CLIENT, "alice", ["readers"])


@pytest.fixture
def tampered_signature_token(signing_key, valid_claims) -> str:
    # a valid token with one character in the middle of its signature changed
    return tk.with_flipped_signature(tk.sign(signing_key, valid_claims))


@pytest.fixture
def tampered_payload_token(signing_key, valid_claims) -> str:
    # a valid token whose payload was then edited: "sub": "someone-else",
    # "cognito:groups": ["admins"]; header and signature unchanged
    return tk.with_payload_changed(
        tk.sign(signing_key, valid_claims), sub="someone-else", **{"cognito:groups": ["admins"]}
    )


@pytest.fixture
def alg_none_token(valid_claims) -> str:
    # header: {"alg": "none", "kid": TEST_KID, "typ": "JWT"}; payload: valid_claims; no signature
    return tk.craft({"alg": "none", "kid": TEST_KID, "typ": "JWT"}, valid_claims)


@pytest.fixture
def alg_none_capitalised_token(valid_claims) -> str:
    # header: {"alg": "None", "kid": TEST_KID}; payload: valid_claims; no signature
    return tk.craft({"alg": "None", "kid": TEST_KID}, valid_claims)


@pytest.fixture
def hs256_with_public_key_token(signing_key, valid_claims) -> str:
    # header: {"alg": "HS256", "kid": TEST_KID, "typ": "JWT"}; payload: valid_claims;
    # HMAC-SHA256 keyed with the RSA public key PEM (what the JWKS publishes)
    return tk.hs256_signed(
        {"alg": "HS256", "kid": TEST_KID, "typ": "JWT"}, valid_claims, signing_key.public_pem()
    )


@pytest.fixture
def hs256_with_public_key_der_token(signing_key, valid_claims) -> str:
    # as above, keyed with the DER bytes of the public key
    der = signing_key.private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return tk.hs256_signed({"alg": "HS256", "kid": TEST_KID}, valid_claims, der)


@pytest.fixture
def foreign_key_same_kid_token(valid_claims) -> str:
    # header: {"alg": "RS256", "kid": TEST_KID}; payload: valid_claims; signed by another
    # RSA key that is not in the JWKS
    return tk.sign(tk.SigningKey.generate(TEST_KID), valid_claims)


@pytest.fixture
def ps256_under_rs256_jwk_token(signing_key, valid_claims) -> str:
    # header: {"alg": "PS256", "kid": TEST_KID}; correctly signed with the test key, but its
    # JWK says "alg": "RS256", and the token's alg must equal the JWK's
    return tk.sign(signing_key, valid_claims, alg="PS256")


@pytest.fixture
def crit_header_token(signing_key, valid_claims) -> str:
    # header: {"alg": "RS256", "kid": TEST_KID, "crit": ["exp"]}: correctly signed, but a
    # crit header is always refused
    import jwt

    return jwt.encode(
        valid_claims, signing_key.private, algorithm="RS256",
        headers={"kid": TEST_KID, "crit": ["exp"]},
    )  # fmt: skip


@pytest.fixture
def header_not_an_object_token(signing_key, valid_claims) -> str:
    # header segment: base64url of `["RS256"]` (JSON, but not an object); real payload+signature
    _, payload, signature = tk.sign(signing_key, valid_claims).split(".")
    header = tk.b64url(b'["RS256"]')
    return f"{header}.{payload}.{signature}"


@pytest.fixture
def four_segment_token(signing_key, valid_claims) -> str:
    # a valid token with an extra ".AAAA" segment
    return tk.sign(signing_key, valid_claims) + ".AAAA"


FORGED = [
    "tampered_signature_token",
    "tampered_payload_token",
    "alg_none_token",
    "alg_none_capitalised_token",
    "hs256_with_public_key_token",
    "hs256_with_public_key_der_token",
    "foreign_key_same_kid_token",
    "ps256_under_rs256_jwk_token",
    "crit_header_token",
    "header_not_an_object_token",
    "four_segment_token",
]


@pytest.mark.parametrize("token_fixture", FORGED)
def test_forged_token_is_invalid(authorizer, upstream, request, token_fixture):
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", bearer(request.getfixturevalue(token_fixture)))

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}


def test_tampered_moto_token_is_invalid(authorizer, upstream, alice):
    resp = authorizer.request("/hello", bearer(tk.with_flipped_signature(alice.access_token)))

    assert_invalid(resp, upstream)


@pytest.mark.parametrize(
    "value",
    ["Bearer abc.def", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer ...", "Bearer e30.e30.",
     # raw, without a scheme: with a dot it is a (bad) token; a single word without one is
     # a scheme without credentials, no token at all (tests/e2e/tokens/test_missing_token.py)
     "not-a.jwt", "Bearer eyJhbGciOiJSUzI1NiJ9.!!!.abc"],
    ids=["two-segments", "no-dots", "three-junk-segments", "only-dots", "empty-objects-no-sig",
         "raw-junk", "bad-base64"],
)  # fmt: skip
def test_garbage_token_is_invalid(authorizer, upstream, value):
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", {"Authorization": value})

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}


def test_unknown_kids_are_invalid_after_exactly_one_refetch(
    start_envoy, upstream, jwks, signing_key, valid_claims
):
    # header: {"alg": "RS256", "kid": "unknown-kid-<n>"}; payload: valid_claims; signed with
    # the test key (so only the kid is wrong). An Envoy of its own: no earlier refetch of
    # another test may have used up the rate limit, so the count below is exact.
    envoy = start_envoy(self_minted_only_config())
    path = jwks_path(TEST_POOL)
    assert_allowed(envoy.request("/", bearer(tk.sign(signing_key, valid_claims))), upstream)
    upstream.clear()
    fetches_before = jwks.hits(path)

    for n in range(3):
        token = tk.sign(signing_key, valid_claims, kid=f"unknown-kid-{n}")
        assert_invalid(envoy.request("/hello", bearer(token)), upstream)

    # jwks_min_refetch_seconds (10 s by default) allows one refetch for the three requests.
    assert jwks.hits(path) - fetches_before == 1
    assert envoy.counter("jwks_refetch_unknown_kid") == 1


def _sized_token(signing_key, size: int) -> str:
    # payload: id token claims + {"padding": "ppp…"} so the whole token is `size` bytes
    return tk.sign_to_length(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT), size)


def test_token_of_exactly_max_token_bytes_passes(authorizer, upstream, signing_key):
    token = _sized_token(signing_key, 8192)
    assert len(token) == 8192

    resp = authorizer.request("/hello", bearer(token))

    assert_allowed(resp, upstream)


def test_token_over_max_token_bytes_is_invalid(authorizer, upstream, signing_key):
    token = _sized_token(signing_key, 8193)  # validly signed, one byte too long
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", bearer(token))

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}


def test_much_larger_token_is_invalid(authorizer, upstream, signing_key):
    token = _sized_token(signing_key, 30000)  # validly signed, under Envoy's header limit

    resp = authorizer.request("/hello", bearer(token))

    assert_invalid(resp, upstream)
