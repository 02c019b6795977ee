"""Both signature paths, same tokens, identical results.

Two Envoys run the same filter configuration but for `signature_backend`: `auto` (RSA PKCS#1
and ECDSA checked by Envoy's BoringSSL through the `verify_signature` foreign function, after
its start-up self-test) and `wasm` (the module's own verifiers for everything). They run the
all-algorithms build, so that every algorithm the filter supports gets a valid token and
tampered ones, under a JWK that names the algorithm and under one that does not; both
Envoys must give each token the same status: 200 for the valid ones, 401 for every tampered
one. A difference would mean one path accepts what the other refuses: a security bug in one
of them.

Tampering: one byte of the decoded signature inverted (first, middle, last); the signature
one byte short, one byte long, with a leading zero byte; all zeros; and per family: RSA
`s + n` (same value mod n), ECDSA as DER instead of JOSE r‖s, r‖s swapped, r = 0, s = 0,
r = n, s = n; Ed25519 `S + L` (same value mod the group order). The high-S twin of a valid ECDSA
signature (s → n − s) is also sent: it is a mathematically valid signature of the same
claims, and both paths must agree on it (see the test for what they answer)."""

from __future__ import annotations

import pytest

from support import mutations as mu
from support import tokens as tk
from support.authorizer_config import (
    CLAIM_HEADERS,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    self_minted_pool,
)
from support.jwks_server import JwksServer
from support.polling import wait_until


# Every algorithm is exercised here: the all-algorithms build (conftest's wasm_path).
pytestmark = pytest.mark.all_algorithms


ED25519_L = 2**252 + 27742317777372353535851937790883648493
FAMILY = {**{a: "RSA" for a in mu.RSA_ALGS}, "ES256": "P-256", "ES384": "P-384", "EdDSA": "Ed25519"}
# (alg, whether the JWK names the alg): the kid of that key in the JWKS.
VARIANTS = [(alg, named) for alg in mu.ALL_ALGS for named in (True, False)]


def _kid(alg: str, named: bool) -> str:
    family = FAMILY[alg].lower().replace("-", "")
    return f"sb-{family}-{alg}" if named else f"sb-{family}-any"


@pytest.fixture(scope="module")
def keys() -> dict[str, mu.Key]:
    keys = {family: mu.Key.generate(family) for family in ("RSA", "P-256", "P-384", "Ed25519")}
    # A modulus below 0.9 * 2^2048 leaves room for s + n in 256 bytes for 1 signature in 10.
    for _ in range(20):
        if keys["RSA"].private.public_key().public_numbers().n < 9 * 2**2048 // 10:
            break
        keys["RSA"] = mu.Key.generate("RSA")
    return keys


@pytest.fixture(scope="module")
def backends(module_envoys, keys):
    """{"auto": Envoy, "wasm": Envoy}, same JWKS, same configuration but the backend."""
    jwks = {"keys": []}
    for alg in mu.ALL_ALGS:
        jwks["keys"].append(keys[FAMILY[alg]].jwk(_kid(alg, True), alg))
    for family in ("RSA", "P-256", "P-384", "Ed25519"):
        jwks["keys"].append(keys[family].jwk(_kid(keys[family].algs[0], False)))
    server = JwksServer(jwks)
    try:
        envoys = {
            backend: module_envoys(
                {"user_pools": [self_minted_pool()], "claims_to_headers": CLAIM_HEADERS,
                 "signature_backend": backend},
                {TEST_CLUSTER: server.port},
                name=f"backend-{backend}",
            )  # fmt: skip
            for backend in ("auto", "wasm")
        }
        yield envoys
    finally:
        server.stop()


ALL_BUILT_IN = "(built in: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"


def test_auto_backend_uses_host_crypto_and_wasm_backend_uses_the_module(backends):
    # Envoy writes its log in the background: wait for the configuration line of each VM.
    for envoy in backends.values():
        wait_until(lambda: "signatures: " in envoy.log_text(), 10, f"{envoy.name}'s log")
    auto, wasm = backends["auto"].log_text(), backends["wasm"].log_text()

    assert (
        f"signatures: RSA by host crypto, ECDSA by host crypto, others by the module {ALL_BUILT_IN}"
    ) in auto
    assert (
        f"signatures: RSA by the module, ECDSA by the module, others by the module {ALL_BUILT_IN}"
    ) in wasm
    assert "host crypto" not in wasm


def _tampered(token: str, alg: str, key: mu.Key) -> dict[str, str]:
    sig = mu.signature_of(token)
    out = {
        **{f"flip-{w}": mu.flip_signature_byte(token, w) for w in ("first", "middle", "last")},
        "one-byte-short": mu.with_signature(token, sig[:-1]),
        "one-byte-long": mu.with_signature(token, sig + b"\x00"),
        "leading-zero-byte": mu.with_signature(token, b"\x00" + sig),
        "all-zeros": mu.with_signature(token, bytes(len(sig))),
        "empty-signature-bytes": mu.with_signature(token, b"\x00"),
    }
    if key.kind == "RSA":
        plus_n = mu.rsa_signature_plus_modulus(token, key)
        if plus_n is not None:
            out["s-plus-modulus"] = plus_n
        # The same key, another digest (or padding) than the header's alg names.
        signing_input = token.rsplit(".", 1)[0].encode()
        other = {"RS256": "RS384", "RS384": "RS512", "RS512": "RS256",
                 "PS256": "PS384", "PS384": "PS512", "PS512": "PS256"}[alg]  # fmt: skip
        out[f"signed-as-{other}"] = mu.with_signature(token, key.sign(signing_input, other))
        swapped = ("PS" if alg.startswith("RS") else "RS") + alg[2:]
        out[f"signed-as-{swapped}"] = mu.with_signature(token, key.sign(signing_input, swapped))
        if alg.startswith("PS"):
            from cryptography.hazmat.primitives.asymmetric import padding

            digest = mu.HASHES[alg[2:]]()
            for salt in (0, 20, padding.PSS.MAX_LENGTH):
                pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=salt)
                out[f"pss-salt-{salt}"] = mu.with_signature(
                    token, key.private.sign(signing_input, pss, digest)
                )
    elif key.kind in ("P-256", "P-384"):
        size = key.coordinate_size
        r, s = sig[:size], sig[size:]
        out["der-instead-of-raw"] = mu.with_signature(token, mu.ecdsa_raw_to_der(sig))
        out["r-and-s-swapped"] = mu.with_signature(token, s + r)
        out["r-zero"] = mu.with_signature(token, bytes(size) + s)
        out["s-zero"] = mu.with_signature(token, r + bytes(size))
        out["s-equals-order"] = mu.with_signature(token, r + key.order.to_bytes(size, "big"))
        out["r-equals-order"] = mu.with_signature(token, key.order.to_bytes(size, "big") + s)
    else:
        s_value = int.from_bytes(sig[32:], "little") + ED25519_L
        out["S-plus-L"] = mu.with_signature(token, sig[:32] + s_value.to_bytes(32, "little"))
    return out


def _rsa_token_with_room_for_s_plus_n(keys, alg: str, kid: str, claims: dict) -> str:
    """A valid token whose signature s leaves room for s + n in the modulus length."""
    for n in range(64):
        token = mu.jws(keys["RSA"], kid, {**claims, "jti": f"room-{n}"}, alg)
        if mu.rsa_signature_plus_modulus(token, keys["RSA"]) is not None:
            return token
    return mu.jws(keys["RSA"], kid, claims, alg)


@pytest.mark.parametrize(
    "alg,named", VARIANTS, ids=[f"{a}-jwk-{'with' if n else 'without'}-alg" for a, n in VARIANTS]
)
def test_valid_and_tampered_tokens_get_identical_statuses_from_both_backends(
    backends, keys, upstream, alg, named
):
    key = keys[FAMILY[alg]]
    kid = _kid(alg, named)
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "sig", sub=f"sub-{alg}")
    if key.kind == "RSA":
        valid = _rsa_token_with_room_for_s_plus_n(keys, alg, kid, claims)
    else:
        valid = mu.jws(key, kid, claims, alg)
    cases = {"valid": valid, **_tampered(valid, alg, key)}
    assert key.kind != "RSA" or "s-plus-modulus" in cases

    statuses = {
        name: {b: e.request("/sig", {"authorization": f"Bearer {t}"}).status
               for b, e in backends.items()}
        for name, t in cases.items()
    }  # fmt: skip

    differing = {n: s for n, s in statuses.items() if s["auto"] != s["wasm"]}
    assert differing == {}, f"the backends disagree ({alg}, kid {kid}): {differing}"
    expected = {n: (200 if n == "valid" else 401) for n in cases}
    assert {n: s["auto"] for n, s in statuses.items()} == expected
    # Only the two valid requests reached the upstream, as the sub they carry.
    assert [r.header("x-cognito-sub") for r in upstream.requests] == [f"sub-{alg}"] * 2


@pytest.mark.parametrize("alg", ["ES256", "ES384"])
def test_high_s_twin_of_a_valid_ecdsa_signature_gets_the_same_answer_from_both_backends(
    backends, keys, upstream, alg
):
    # (r, n - s) verifies like (r, s): ECDSA signatures are malleable, JOSE does not forbid
    # it, BoringSSL and the RustCrypto p256/p384 crates accept it. Both paths must agree; the
    # twin carries the same claims the pool signed, so accepting it is not a forgery.
    key = keys[FAMILY[alg]]
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "sig", sub=f"sub-high-s-{alg}")
    for named in (True, False):
        twin = mu.high_s(mu.jws(key, _kid(alg, named), claims, alg), key)

        statuses = {
            b: e.request("/sig", {"authorization": f"Bearer {twin}"}).status
            for b, e in backends.items()
        }

        assert statuses["auto"] == statuses["wasm"], statuses
        assert statuses["auto"] == 200, statuses


# Header members a verifier may ignore (the filter never reads them), with values of types
# or contents that jwt-simple's own header parsing refuses (its JWTHeader types `typ`, `cty`,
# `jku`, `jwk`, `x5u`, `x5t`, `x5t#S256`, `salt` as strings, `x5c` as a list of strings, and
# it requires `typ` to be "JWT" or end in "+JWT"). Each token is otherwise valid and signed by
# the real key. The filter applies the same header rules whichever path checks the signature.
HEADER_VARIANTS = {
    "typ-JOSE": {"typ": "JOSE"},
    "typ-JWS": {"typ": "JWS"},
    "typ-number": {"typ": 1},
    "typ-at+jwt": {"typ": "at+jwt"},
    "cty-object": {"cty": {"a": 1}},
    "jwk-as-a-JWK-object": {"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}},
    "x5c-list-of-numbers": {"x5c": [1]},
    "x5c-string": {"x5c": "MIIB"},
    "x5t-number": {"x5t": 1},
    "x5t#S256-list": {"x5t#S256": []},
    "jku-number": {"jku": 1},
    "x5u-object": {"x5u": {}},
    "salt-not-base64url": {"salt": "!!"},
    "salt-number": {"salt": 1},
}
HEADER_ALGS = ("RS256", "ES256", "PS256", "EdDSA")  # host-capable first, then module only


@pytest.mark.parametrize("variant", list(HEADER_VARIANTS))
def test_valid_token_with_an_ignored_header_member_gets_the_same_status_from_both_backends(
    backends, keys, variant
):
    statuses = {}
    for alg in HEADER_ALGS:
        key = keys[FAMILY[alg]]
        claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "sig", sub=f"sub-hdr-{alg}")
        token = mu.jws(key, _kid(alg, True), claims, alg, **HEADER_VARIANTS[variant])
        statuses[alg] = {
            b: e.request("/sig", {"authorization": f"Bearer {token}"}).status
            for b, e in backends.items()
        }

    differing = {alg: s for alg, s in statuses.items() if s["auto"] != s["wasm"]}
    assert differing == {}, f"header {HEADER_VARIANTS[variant]}: the backends disagree: {statuses}"
    assert len({s["auto"] for s in statuses.values()}) == 1, f"algorithms disagree: {statuses}"


@pytest.mark.parametrize("alg", mu.RSA_ALGS)
def test_rsa_signature_with_its_leading_zero_byte_stripped_gets_the_same_status(
    backends, keys, alg
):
    # 1 RSA signature in 256 starts with a 0x00 byte; without it, the 255 bytes still hold
    # the same number. RFC 8017 requires the signature to be exactly k bytes long.
    key = keys["RSA"]
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "sig", sub=f"sub-zero-{alg}")
    for n in range(3000):
        token = mu.jws(key, _kid(alg, True), {**claims, "jti": f"zero-{n}"}, alg)
        if mu.signature_of(token)[0] == 0:
            break
    else:
        pytest.fail("no signature with a leading zero byte in 3000 tries")
    stripped = mu.with_signature(token, mu.signature_of(token)[1:])

    statuses = {
        name: {b: e.request("/sig", {"authorization": f"Bearer {t}"}).status
               for b, e in backends.items()}
        for name, t in (("valid", token), ("stripped", stripped))
    }  # fmt: skip

    assert statuses == {"valid": {"auto": 200, "wasm": 200},
                        "stripped": {"auto": 401, "wasm": 401}}, statuses  # fmt: skip
