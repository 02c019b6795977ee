"""Adversarial tokens and requests, on real Envoy: every case has one exact expected
answer, and nothing but a token the pool really issued (valid now) reaches the upstream.

Extends test_forged_tokens.py (not repeated here: tampered payload, `alg: none`/`None`
unsigned, HS256 keyed with the PEM/DER public key, a foreign RSA key under the real kid,
PS256 under an RS256 JWK, `crit: ["exp"]`, a header that is a JSON array, `.AAAA` as a fourth
segment, 8192/8193/30000-byte tokens).

The JWKS (served by a JWKS server of this module) holds several keys: `adv-rsa` (RS256, as
Cognito publishes), the same RSA key as `adv-rsa-any` without `alg` (every RS*/PS*),
a second RSA key `adv-rsa2`, `adv-ec256` (ES256), `adv-ec384` (ES384), `adv-ed` (EdDSA).
Tokens are id tokens of the test pool signed with those keys unless a case says otherwise.
An "attacker" HTTP server on 127.0.0.1 (also an Envoy cluster, so a callout to it would be
possible) serves the attacker's keys; `jku`/`x5u`/`jwk`/`x5c` point at it, and it must never
be contacted. Two Envoys: `adv` (the default `max_token_bytes`) and `big`
(`max_token_bytes` 1 MiB, so that huge and deeply nested tokens reach the parser)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass

import pytest

from support import mutations as mu
from support import tokens as tk
from support.assertions import (
    Outcomes,
    assert_allowed,
    assert_expired,
    assert_invalid,
)
from support.authorizer_config import (
    CLAIM_HEADERS,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    TEST_POOL,
    jwks_path,
    self_minted_pool,
)
from support.client import KeepAliveClient, raw_exchange
from support.envoy import refusal_reasons_since, settled_log_size
from support.jwks_server import JwksServer
from support.servers import BackgroundServer, QuietHandler
from support.scenarios import bearer


# Every algorithm is exercised here: the all-algorithms build (conftest's wasm_path).
pytestmark = pytest.mark.all_algorithms


ATTACKER_CLUSTER = "attacker"
KID_FOR_ALG = {
    "RS256": "adv-rsa",
    "RS384": "adv-rsa-any",
    "RS512": "adv-rsa-any",
    "PS256": "adv-rsa-any",
    "PS384": "adv-rsa-any",
    "PS512": "adv-rsa-any",
    "ES256": "adv-ec256",
    "ES384": "adv-ec384",
    "EdDSA": "adv-ed",
}
KEY_FOR_KID = {
    "adv-rsa": "rsa",
    "adv-rsa-any": "rsa",
    "adv-rsa2": "rsa2",
    "adv-ec256": "ec256",
    "adv-ec384": "ec384",
    "adv-ed": "ed",
}


# --- the world: keys, servers, Envoys ----------------------------------------------------


class AttackerServer:
    """Answers anything with the attacker's JWKS, and counts every request it gets."""

    def __init__(self, body: bytes):
        self.seen: list[str] = []
        lock = threading.Lock()
        server = self

        class Handler(QuietHandler):
            def _any(self):
                with lock:
                    server.seen.append(f"{self.command} {self.path}")
                self.reply(200, body)

            do_GET = do_POST = do_PUT = do_HEAD = do_OPTIONS = _any

        self._server = BackgroundServer(Handler)
        self.port = self._server.port
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self._server.stop()


@dataclass
class World:
    keys: dict[str, mu.Key]
    attacker_url: str

    def claims(self, **changes) -> dict:
        claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, "mallory", ["readers"], sub="sub-adv")
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not DROP}

    def token(self, alg: str = "RS256", kid=None, claims: dict | bytes | None = None,
              key: str | None = None, **header) -> str:  # fmt: skip
        """Signed by `key` (default: the key the kid names, else the adv-rsa key), with header
        {alg, kid, typ, **header}. kid=None: the kid of the alg's key; DROP: no kid; NULL:
        `"kid": null`."""
        kid = KID_FOR_ALG[alg] if kid is None else kid
        if key is None:
            key = KEY_FOR_KID.get(kid, "rsa") if isinstance(kid, str) else "rsa"
        signer = self.keys[key]
        kid = None if kid is NULL else kid
        full = {"alg": alg, "typ": "JWT"}
        if kid is not DROP:
            full["kid"] = kid
        full.update(header)
        return mu.signed(full, self.claims() if claims is None else claims, signer, alg)


class _Drop:
    def __repr__(self):
        return "DROP"


DROP = _Drop()
NULL = object()


@pytest.fixture(scope="module")
def world() -> World:
    keys = {
        name: mu.Key.generate(kind)
        for name, kind in (
            ("rsa", "RSA"),
            ("rsa2", "RSA"),
            ("ec256", "P-256"),
            ("ec384", "P-384"),
            ("ed", "Ed25519"),
            ("attacker_rsa", "RSA"),
            ("attacker_ec256", "P-256"),
            ("attacker_ec384", "P-384"),
            ("attacker_ed", "Ed25519"),
        )
    }
    return World(keys, "")


@pytest.fixture(scope="module")
def adv_jwks(world):
    k = world.keys
    key_set = {
        "keys": [
            k["rsa"].jwk("adv-rsa", "RS256"),
            k["rsa"].jwk("adv-rsa-any"),
            k["rsa2"].jwk("adv-rsa2", "RS256"),
            k["ec256"].jwk("adv-ec256", "ES256"),
            k["ec384"].jwk("adv-ec384", "ES384"),
            k["ed"].jwk("adv-ed", "EdDSA"),
        ]
    }
    server = JwksServer(key_set)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def attacker(world):
    k = world.keys
    body = mu.json_bytes(
        {
            "keys": [
                k["attacker_rsa"].jwk("adv-rsa", "RS256"),
                k["attacker_rsa"].jwk("attacker-kid", "RS256"),
            ]
        }
    )
    server = AttackerServer(body)
    world.attacker_url = server.url
    yield server
    server.stop()


def _config(**top) -> dict:
    return {"user_pools": [self_minted_pool()], "claims_to_headers": CLAIM_HEADERS, **top}


@pytest.fixture(scope="module")
def adv(module_envoys, adv_jwks, attacker):
    """Envoy with the default max_token_bytes (8192)."""
    return module_envoys(
        _config(), {TEST_CLUSTER: adv_jwks.port, ATTACKER_CLUSTER: attacker.port}, name="adv"
    )


@pytest.fixture(scope="module")
def big(module_envoys, adv_jwks, attacker):
    """Envoy with max_token_bytes 1 MiB: huge and deeply nested tokens reach the parser."""
    return module_envoys(
        _config(max_token_bytes=1 << 20),
        {TEST_CLUSTER: adv_jwks.port, ATTACKER_CLUSTER: attacker.port},
        name="big",
    )


def _hmac(alg: str, header: dict, payload: dict, secret: bytes) -> str:
    signing_input = f"{mu._segment(header)}.{mu._segment(payload)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{tk.b64url(mac)}"


def _hs_secret(w: World, form: str) -> bytes:
    rsa = w.keys["rsa"]
    jwk = rsa.jwk("adv-rsa", "RS256")
    return {
        "pem": rsa.public_pem(),
        "der": rsa.public_der(),
        "n-bytes": tk.b64url_decode(jwk["n"]),
        "n-text": jwk["n"].encode(),
        "jwk-json": mu.json_bytes(jwk),
    }[form]


def _dup_header(w: World, extra: str, alg: str = "RS256") -> str:
    header = f'{{"alg":"{alg}","kid":"adv-rsa","typ":"JWT",{extra}}}'.encode()
    return mu.signed(header, w.claims(), w.keys["rsa"], alg)


def _payload_text(w: World, text: bytes) -> str:
    return mu.signed({"alg": "RS256", "kid": "adv-rsa", "typ": "JWT"}, text, w.keys["rsa"],
                     "RS256")  # fmt: skip


def _claims_json(w: World) -> str:
    return mu.json_bytes(w.claims()).decode()


def _std_b64_signature(w: World) -> str:
    # A token whose signature segment holds '-' or '_' (so the std alphabet differs).
    for n in range(50):
        token = w.token(claims=w.claims(jti=f"std-{n}"))
        sig = token.rsplit(".", 1)[1]
        if "-" in sig or "_" in sig:
            return mu.resegment(token, 2, lambda s: s.replace("-", "+").replace("_", "/"))
    raise AssertionError("no signature with - or _ in 50 tries")


def _valid(w: World) -> str:
    return w.token()


def _pad(segment: str) -> str:
    """`=` padding, at least one (base64url in JWS has none at all)."""
    return segment + "=" * (-len(segment) % 4 or 2)


def _unencoded_payload(w: World) -> str:
    # RFC 7797: header {"b64": false, "crit": ["b64"]}, the payload JSON as it is (not
    # base64url), signed over `header.payload` like that.
    header = tk.b64url_json({"alg": "RS256", "kid": "adv-rsa", "b64": False, "crit": ["b64"]})
    signing_input = f"{header}.{_claims_json(w)}"
    return f"{signing_input}.{tk.b64url(w.keys['rsa'].sign(signing_input.encode(), 'RS256'))}"


# --- cases -------------------------------------------------------------------------------

# Each builder returns the token sent as `Authorization: Bearer <token>`; every one must be
# answered 401 {"message":"Unauthorized"} with error="invalid_token", counted as invalid.
INVALID: dict[str, object] = {
    # alg none in other spellings, with and without a signature
    "alg-NONE-unsigned": lambda w: tk.craft({"alg": "NONE", "kid": "adv-rsa"}, w.claims()),
    "alg-nOnE-unsigned": lambda w: tk.craft({"alg": "nOnE", "kid": "adv-rsa"}, w.claims()),
    "alg-none-with-garbage-signature": lambda w: tk.craft(
        {"alg": "none", "kid": "adv-rsa"}, w.claims(), b"\x00" * 8
    ),
    "alg-none-with-real-RS256-signature": lambda w: mu.signed(
        {"alg": "none", "kid": "adv-rsa"}, w.claims(), w.keys["rsa"], "RS256"
    ),
    "alg-missing-RS256-signed": lambda w: mu.signed({"kid": "adv-rsa"}, w.claims(),
                                                    w.keys["rsa"], "RS256"),  # fmt: skip
    "alg-null-RS256-signed": lambda w: mu.signed({"alg": None, "kid": "adv-rsa"}, w.claims(),
                                                 w.keys["rsa"], "RS256"),  # fmt: skip
    "alg-lowercase-rs256-signed": lambda w: mu.signed(
        {"alg": "rs256", "kid": "adv-rsa"}, w.claims(), w.keys["rsa"], "RS256"
    ),
    "alg-list-RS256-signed": lambda w: mu.signed({"alg": ["RS256"], "kid": "adv-rsa"},
                                                 w.claims(), w.keys["rsa"], "RS256"),  # fmt: skip
    # HMAC keyed with the RSA public key in every form a confused verifier might use
    **{
        f"{alg}-keyed-with-public-key-{form}": (
            lambda w, alg=alg, form=form: _hmac(
                alg, {"alg": alg, "kid": "adv-rsa", "typ": "JWT"}, w.claims(), _hs_secret(w, form)
            )
        )
        for alg in ("HS256", "HS384", "HS512")
        for form in ("pem", "der", "n-bytes", "n-text", "jwk-json")
        if not (alg == "HS256" and form in ("pem", "der"))  # in test_forged_tokens
    },
    # alg that the JWK does not serve (correctly signed for the alg the header names)
    "RS384-under-RS256-jwk": lambda w: w.token("RS384", kid="adv-rsa"),
    "RS512-under-RS256-jwk": lambda w: w.token("RS512", kid="adv-rsa"),
    "PS512-under-RS256-jwk": lambda w: w.token("PS512", kid="adv-rsa"),
    "ES256-under-RSA-kid": lambda w: w.token("ES256", kid="adv-rsa", key="ec256"),
    "EdDSA-under-RSA-kid": lambda w: w.token("EdDSA", kid="adv-rsa", key="ed"),
    "RS256-under-EC-kid": lambda w: w.token("RS256", kid="adv-ec256", key="rsa"),
    "ES384-under-P256-kid": lambda w: w.token("ES384", kid="adv-ec256", key="ec384"),
    "ES256-under-P384-kid": lambda w: w.token("ES256", kid="adv-ec384", key="ec256"),
    "RS256-under-EdDSA-kid": lambda w: w.token("RS256", kid="adv-ed", key="rsa"),
    # kid: traversal, injection, size, types, absence (all signed by the adv-rsa key)
    "kid-path-traversal": lambda w: w.token(kid="../../../../etc/passwd", key="rsa"),
    "kid-url-encoded-traversal": lambda w: w.token(kid="..%2F..%2F.well-known%2Fjwks.json",
                                                   key="rsa"),  # fmt: skip
    "kid-sql-injection": lambda w: w.token(kid="' OR '1'='1' --", key="rsa"),
    "kid-4-KiB": lambda w: w.token(kid="k" * 4096, key="rsa"),
    "kid-number": lambda w: w.token(kid=1, key="rsa"),
    "kid-object": lambda w: w.token(kid={"kid": "adv-rsa"}, key="rsa"),
    "kid-null": lambda w: w.token(kid=NULL, key="rsa"),
    "kid-list": lambda w: w.token(kid=["adv-rsa"], key="rsa"),
    "kid-empty": lambda w: w.token(kid="", key="rsa"),
    "kid-missing-with-several-keys": lambda w: w.token(kid=DROP, key="rsa"),
    "kid-other-case": lambda w: w.token(kid="ADV-RSA", key="rsa"),
    "kid-trailing-space": lambda w: w.token(kid="adv-rsa ", key="rsa"),
    "kid-of-another-key": lambda w: w.token(kid="adv-rsa2", key="rsa"),
    # key-carrying headers pointing at the attacker, signed by the attacker
    "jku-attacker-signed-real-kid": lambda w: w.token(
        kid="adv-rsa", key="attacker_rsa", jku=f"{w.attacker_url}/.well-known/jwks.json"
    ),
    "jku-attacker-signed-attacker-kid": lambda w: w.token(
        kid="attacker-kid", key="attacker_rsa", jku=f"{w.attacker_url}/.well-known/jwks.json"
    ),
    "x5u-attacker-signed": lambda w: w.token(
        kid="adv-rsa", key="attacker_rsa", x5u=f"{w.attacker_url}/cert.pem"
    ),
    "jwk-embedded-attacker-key-attacker-kid": lambda w: w.token(
        kid="attacker-kid", key="attacker_rsa",
        jwk=w.keys["attacker_rsa"].jwk("attacker-kid", "RS256"),
    ),  # fmt: skip
    "jwk-embedded-attacker-key-real-kid": lambda w: w.token(
        kid="adv-rsa", key="attacker_rsa", jwk=w.keys["attacker_rsa"].jwk("adv-rsa", "RS256")
    ),
    "jwk-embedded-attacker-key-no-kid": lambda w: w.token(
        kid=DROP, key="attacker_rsa", jwk=w.keys["attacker_rsa"].jwk("x", "RS256")
    ),
    "x5c-attacker-certificate": lambda w: w.token(
        kid="adv-rsa", key="attacker_rsa",
        x5c=[mu.std_b64(w.keys["attacker_rsa"].self_signed_cert_der(), pad=True)],
    ),  # fmt: skip
    "jwk-embedded-attacker-EC-key": lambda w: w.token(
        "ES256", kid="adv-ec256", key="attacker_ec256",
        jwk=w.keys["attacker_ec256"].jwk("adv-ec256", "ES256"),
    ),  # fmt: skip
    # crit / b64
    "crit-empty-list": lambda w: w.token(crit=[]),
    "crit-b64-with-b64-false": lambda w: w.token(crit=["b64"], b64=False),
    "b64-false-without-crit": lambda w: w.token(b64=False),
    "b64-false-unencoded-payload": lambda w: _unencoded_payload(w),
    "b64-string-false": lambda w: w.token(b64="false"),
    "crit-string": lambda w: w.token(crit="exp"),
    # segments
    "two-segments-of-a-valid-token": lambda w: _valid(w).rsplit(".", 1)[0],
    "four-segments-trailing-dot": lambda w: _valid(w) + ".",
    "five-segments-jwe-shape": lambda w: _valid(w) + ".AAAA.BBBB",
    "empty-header-segment": lambda w: "." + _valid(w).split(".", 1)[1],
    "empty-payload-segment": lambda w: (lambda p: f"{p[0]}..{p[2]}")(_valid(w).split(".")),
    "empty-signature-segment": lambda w: _valid(w).rsplit(".", 1)[0] + ".",
    "only-dots": lambda w: "..",
    # padding, alphabet, whitespace
    "padding-on-header": lambda w: mu.resegment(_valid(w), 0, _pad),
    "padding-on-payload": lambda w: mu.resegment(_valid(w), 1, _pad),
    "padding-on-signature": lambda w: mu.resegment(_valid(w), 2, _pad),
    "padding-inside-signature": lambda w: mu.resegment(_valid(w), 2, lambda s: f"{s[:8]}={s[8:]}"),
    "std-base64-signature": _std_b64_signature,
    "std-base64-whole-token": lambda w: ".".join(
        mu.std_b64(tk.b64url_decode(p), pad=True) for p in _valid(w).split(".")
    ),
    "space-inside-payload": lambda w: mu.resegment(_valid(w), 1, lambda s: s[:10] + " " + s[10:]),
    "tab-inside-signature": lambda w: mu.resegment(_valid(w), 2, lambda s: s[:10] + "\t" + s[10:]),
    "space-around-a-dot": lambda w: _valid(w).replace(".", " . ", 1),
    "non-canonical-trailing-bits-in-signature": lambda w: _non_canonical_signature(w),
    # JSON shapes (signed with the real key)
    "header-not-json": lambda w: mu.signed(b"not json", w.claims(), w.keys["rsa"], "RS256"),
    "payload-not-json": lambda w: _payload_text(w, b"not json"),
    "payload-json-array": lambda w: _payload_text(w, b"[1,2,3]"),
    "payload-json-string": lambda w: _payload_text(w, b'"x"'),
    "payload-json-null": lambda w: _payload_text(w, b"null"),
    "payload-trailing-garbage": lambda w: _payload_text(w, _claims_json(w).encode() + b"x"),
    "payload-two-objects": lambda w: _payload_text(w, _claims_json(w).encode() + b"{}"),
    "payload-utf8-bom": lambda w: _payload_text(w, b"\xef\xbb\xbf" + _claims_json(w).encode()),
    "payload-invalid-utf8": lambda w: _payload_text(
        w, _claims_json(w).encode()[:-1] + b',"x":"\xff\xfe"}'
    ),
    "payload-raw-control-char": lambda w: _payload_text(
        w, _claims_json(w).encode()[:-1] + b',"x":"a\x01b"}'
    ),
    "header-duplicate-alg-same": lambda w: _dup_header(w, '"alg":"RS256"'),
    "header-duplicate-alg-HS256": lambda w: _dup_header(w, '"alg":"HS256"'),
    "header-duplicate-kid": lambda w: _dup_header(w, '"kid":"adv-rsa2"'),
    "header-trailing-comma": lambda w: mu.signed(
        b'{"alg":"RS256","kid":"adv-rsa",}', w.claims(), w.keys["rsa"], "RS256"
    ),
    "payload-duplicate-sub": lambda w: _payload_text(
        w, _claims_json(w).encode()[:-1] + b',"sub":"admin"}'
    ),
    "payload-duplicate-iss": lambda w: _payload_text(
        w, _claims_json(w).encode()[:-1] + f',"iss":"{TEST_ISSUER}x"}}'.encode()
    ),
    "payload-duplicate-exp-past-last": lambda w: _payload_text(
        w, _claims_json(w).encode()[:-1] + b',"exp":1}'
    ),
    "payload-duplicate-groups": lambda w: _payload_text(
        w, _claims_json(w).encode()[:-1] + b',"cognito:groups":["admins"]}'
    ),
    "payload-duplicate-by-escape": lambda w: _payload_text(
        w, _claims_json(w).encode()[:-1] + b',"s\\u0075b":"admin"}'
    ),
    # time claims of the wrong type (valid signature): invalid, never "expired"
    **{
        f"{claim}-{name}": (
            lambda w, claim=claim, value=value: w.token(claims=w.claims(**{claim: value}))
        )
        for claim in ("exp", "nbf", "iat")
        for name, value in (
            ("string", "1900000000"),
            ("float", 1900000000.5),
            ("integral-float", 1900000000.0),
            ("negative", -1),
            ("u64-overflow", 1 << 64),
            ("1e300", 1e300),
            ("null", None),
            ("bool", True),
            ("beyond-2106", (1 << 32) + 1),
            ("object", {"$date": 1900000000}),
        )
    },
    "exp-missing": lambda w: w.token(claims=w.claims(exp=DROP)),
    # iss / aud / token_use / client_id of the wrong type
    "iss-number": lambda w: w.token(claims=w.claims(iss=1)),
    "iss-list": lambda w: w.token(claims=w.claims(iss=[TEST_ISSUER])),
    "iss-object": lambda w: w.token(claims=w.claims(iss={"iss": TEST_ISSUER})),
    "iss-null": lambda w: w.token(claims=w.claims(iss=None)),
    "iss-with-nul": lambda w: w.token(claims=w.claims(iss=TEST_ISSUER + "\x00")),
    "aud-number": lambda w: w.token(claims=w.claims(aud=1)),
    "aud-object": lambda w: w.token(claims=w.claims(aud={"aud": TEST_CLIENT})),
    "aud-list-with-a-number": lambda w: w.token(claims=w.claims(aud=[TEST_CLIENT, 1])),
    "aud-null": lambda w: w.token(claims=w.claims(aud=None)),
    "aud-bool": lambda w: w.token(claims=w.claims(aud=True)),
    "token_use-number": lambda w: w.token(claims=w.claims(token_use=1)),
    "token_use-list": lambda w: w.token(claims=w.claims(token_use=["id"])),
    "token_use-object": lambda w: w.token(claims=w.claims(token_use={"id": True})),
    "token_use-null": lambda w: w.token(claims=w.claims(token_use=None)),
    "token_use-upper-case": lambda w: w.token(claims=w.claims(token_use="ID")),
    "access-token-client_id-number": lambda w: w.token(
        claims={**tk.access_claims(TEST_ISSUER, TEST_CLIENT), "client_id": 1}
    ),
    "access-token-client_id-list": lambda w: w.token(
        claims={**tk.access_claims(TEST_ISSUER, TEST_CLIENT), "client_id": [TEST_CLIENT]}
    ),
    # another key under the real kid, for every key family
    "foreign-P256-key-same-kid": lambda w: w.token("ES256", key="attacker_ec256"),
    "foreign-P384-key-same-kid": lambda w: w.token("ES384", key="attacker_ec384"),
    "foreign-Ed25519-key-same-kid": lambda w: w.token("EdDSA", key="attacker_ed"),
    "foreign-RSA-key-kid-without-alg": lambda w: w.token("PS256", key="attacker_rsa"),
    "another-pool-key-of-the-same-set": lambda w: w.token(kid="adv-rsa", key="rsa2"),
}


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _with_trailing_bit(token: str) -> str:
    """The same signature bytes, encoded non-canonically: an RS256 signature (256 bytes) is
    342 characters whose last one carries 4 unused bits; one of them set."""
    return token[:-1] + B64URL[B64URL.index(token[-1]) | 1]


def _non_canonical_signature(w: World) -> str:
    return _with_trailing_bit(_valid(w))


# Unusual but legal: each is a token the pool really issued, valid now → 200.
ALLOWED: dict[str, object] = {
    **{f"{alg}-valid": (lambda w, alg=alg: w.token(alg)) for alg in mu.ALL_ALGS},
    "RS256-under-jwk-without-alg": lambda w: w.token("RS256", kid="adv-rsa-any"),
    # Key-carrying headers are ignored, never followed (the server stays untouched). A `jwk`
    # member as a JWK object is left to test_signature_backends.py: the two signature
    # backends answer it differently today.
    "jku-x5u-x5c-present-but-real-key": lambda w: w.token(
        jku=f"{w.attacker_url}/.well-known/jwks.json", x5u=f"{w.attacker_url}/c.pem",
        x5c=[mu.std_b64(w.keys["attacker_rsa"].self_signed_cert_der(), pad=True)],
    ),  # fmt: skip
    "b64-true": lambda w: w.token(b64=True),
    "aud-list-holding-the-client": lambda w: w.token(claims=w.claims(aud=["x", TEST_CLIENT])),
    "claim-nested-100-levels": lambda w: w.token(
        claims=w.claims(deep=json.loads("[" * 100 + "]" * 100))
    ),
    "size-8191-bytes": lambda w: tk.sign_to_length(
        tk.SigningKey("adv-rsa", w.keys["rsa"].private), w.claims(), 8191
    ),
}

# Every case's own refusal reason, by reason (each case named: no reason is inferred from a
# name). The run reads the reason from Envoy's debug log line `refused: reason=...`.
EXPECTED_REASONS: dict[str, list[str]] = {
    "alg_not_allowed": [
        "alg-none-with-garbage-signature",
        "alg-none-with-real-RS256-signature",
        "alg-missing-RS256-signed",
        "alg-null-RS256-signed",
        "alg-lowercase-rs256-signed",
        "alg-list-RS256-signed",
        "HS256-keyed-with-public-key-n-bytes",
        "HS256-keyed-with-public-key-n-text",
        "HS256-keyed-with-public-key-jwk-json",
        "HS384-keyed-with-public-key-pem",
        "HS384-keyed-with-public-key-der",
        "HS384-keyed-with-public-key-n-bytes",
        "HS384-keyed-with-public-key-n-text",
        "HS384-keyed-with-public-key-jwk-json",
        "HS512-keyed-with-public-key-pem",
        "HS512-keyed-with-public-key-der",
        "HS512-keyed-with-public-key-n-bytes",
        "HS512-keyed-with-public-key-n-text",
        "HS512-keyed-with-public-key-jwk-json",
    ],
    "bad_signature": [
        "kid-of-another-key",
        "jku-attacker-signed-real-kid",
        "x5u-attacker-signed",
        "x5c-attacker-certificate",
        "non-canonical-trailing-bits-in-signature",
        "foreign-P256-key-same-kid",
        "foreign-P384-key-same-kid",
        "foreign-Ed25519-key-same-kid",
        "foreign-RSA-key-kid-without-alg",
        "another-pool-key-of-the-same-set",
    ],
    "claim_type(aud)": [
        "aud-number",
        "aud-object",
        "aud-list-with-a-number",
        "aud-null",
        "aud-bool",
    ],
    "claim_type(client_id)": [
        "access-token-client_id-number",
        "access-token-client_id-list",
    ],
    "claim_type(exp)": [
        "exp-string",
        "exp-float",
        "exp-integral-float",
        "exp-negative",
        "exp-u64-overflow",
        "exp-1e300",
        "exp-null",
        "exp-bool",
        "exp-beyond-2106",
        "exp-object",
    ],
    "claim_type(iat)": [
        "iat-string",
        "iat-float",
        "iat-integral-float",
        "iat-negative",
        "iat-u64-overflow",
        "iat-1e300",
        "iat-null",
        "iat-bool",
        "iat-beyond-2106",
        "iat-object",
    ],
    "claim_type(nbf)": [
        "nbf-string",
        "nbf-float",
        "nbf-integral-float",
        "nbf-negative",
        "nbf-u64-overflow",
        "nbf-1e300",
        "nbf-null",
        "nbf-bool",
        "nbf-beyond-2106",
        "nbf-object",
    ],
    "crit_header": [
        "crit-empty-list",
        "crit-b64-with-b64-false",
        "b64-false-without-crit",
        "b64-string-false",
        "crit-string",
    ],
    "duplicate_member": [
        "header-duplicate-alg-same",
        "header-duplicate-alg-HS256",
        "header-duplicate-kid",
        "payload-duplicate-sub",
        "payload-duplicate-iss",
        "payload-duplicate-exp-past-last",
        "payload-duplicate-groups",
        "payload-duplicate-by-escape",
    ],
    "key_alg_mismatch": [
        "RS384-under-RS256-jwk",
        "RS512-under-RS256-jwk",
        "PS512-under-RS256-jwk",
        "ES256-under-RSA-kid",
        "EdDSA-under-RSA-kid",
        "RS256-under-EC-kid",
        "ES384-under-P256-kid",
        "ES256-under-P384-kid",
        "RS256-under-EdDSA-kid",
    ],
    "malformed": [
        "alg-NONE-unsigned",
        "alg-nOnE-unsigned",
        "jwk-embedded-attacker-key-attacker-kid",
        "jwk-embedded-attacker-key-real-kid",
        "jwk-embedded-attacker-EC-key",
        "b64-false-unencoded-payload",
        "two-segments-of-a-valid-token",
        "four-segments-trailing-dot",
        "five-segments-jwe-shape",
        "empty-header-segment",
        "empty-payload-segment",
        "empty-signature-segment",
        "only-dots",
        "padding-on-header",
        "padding-on-payload",
        "padding-on-signature",
        "padding-inside-signature",
        "std-base64-signature",
        "std-base64-whole-token",
        "space-inside-payload",
        "tab-inside-signature",
        "space-around-a-dot",
        "header-not-json",
        "payload-not-json",
        "payload-json-array",
        "payload-json-string",
        "payload-json-null",
        "payload-trailing-garbage",
        "payload-two-objects",
        "payload-utf8-bom",
        "payload-invalid-utf8",
        "payload-raw-control-char",
        "header-trailing-comma",
    ],
    "missing_exp": [
        "exp-missing",
    ],
    "missing_kid": [
        "kid-number",
        "kid-object",
        "kid-null",
        "kid-list",
        "kid-empty",
        "kid-missing-with-several-keys",
        "jwk-embedded-attacker-key-no-kid",
    ],
    "token_use_not_allowed": [
        "token_use-number",
        "token_use-list",
        "token_use-object",
        "token_use-null",
        "token_use-upper-case",
    ],
    "unknown_issuer": [
        "iss-number",
        "iss-list",
        "iss-object",
        "iss-null",
        "iss-with-nul",
    ],
    "unknown_kid": [
        "kid-path-traversal",
        "kid-url-encoded-traversal",
        "kid-sql-injection",
        "kid-4-KiB",
        "kid-other-case",
        "kid-trailing-space",
        "jku-attacker-signed-attacker-kid",
    ],
}
_REASONS = {case: reason for reason, cases in EXPECTED_REASONS.items() for case in cases}
assert set(_REASONS) == set(INVALID), set(INVALID) ^ set(_REASONS)


def expected_reason(case: str) -> str:
    return _REASONS[case]


FLIPS = [(alg, where) for alg in mu.ALL_ALGS for where in ("first", "middle", "last")]


# --- tests -------------------------------------------------------------------------------


def _assert_attacker_untouched(attacker):
    assert attacker.seen == [], f"the attacker's server was contacted: {attacker.seen}"


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_adversarial_token_is_refused_as_invalid(adv, upstream, world, attacker, case):
    token = INVALID[case](world)
    outcomes = Outcomes(adv)

    resp = adv.request("/adv", bearer(token))

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}
    _assert_attacker_untouched(attacker)


@pytest.mark.parametrize("case", list(ALLOWED), ids=list(ALLOWED))
def test_legal_token_of_unusual_shape_is_allowed(adv, upstream, world, attacker, case):
    resp = adv.request("/adv", bearer(ALLOWED[case](world)))

    received = assert_allowed(resp, upstream)
    assert received.header("x-cognito-sub") == "sub-adv"
    _assert_attacker_untouched(attacker)


@pytest.mark.parametrize("alg,where", FLIPS, ids=[f"{a}-{w}" for a, w in FLIPS])
def test_signature_with_one_byte_flipped_is_invalid(adv, upstream, world, alg, where):
    # A valid token of `alg` (signed by the key its kid names) with one byte of the decoded
    # signature inverted, re-encoded canonically.
    token = mu.flip_signature_byte(world.token(alg), where)

    assert_invalid(adv.request("/adv", bearer(token)), upstream)


def test_each_adversarial_token_is_refused_for_its_own_reason(adv, world):
    # The INVALID tokens again, one at a time on one connection (one worker, in order), then
    # the filter's reasons read from its debug log in the same order.
    tokens = {case: build(world) for case, build in INVALID.items()}
    client = KeepAliveClient()
    mark = settled_log_size(adv)
    try:
        statuses = [client.request(adv.port, "/adv", bearer(t)).status for t in tokens.values()]
    finally:
        client.close()
    assert set(statuses) == {401}

    reasons = refusal_reasons_since(adv, mark, len(tokens))

    wrong = {
        case: (got, expected_reason(case))
        for case, got in zip(tokens, reasons)
        if got != expected_reason(case)
    }
    assert wrong == {}, f"(got, expected) by case: {wrong}"


def test_cached_valid_token_never_vouches_for_a_variant_of_it(adv, upstream, world):
    # The verified-token cache is keyed by the whole token: once a valid token is cached in
    # both worker VMs, tokens that share its signature, header or payload are still checked.
    valid = world.token()
    head, payload, sig = valid.split(".")
    _, claims, _ = tk.split(valid)

    def allowed():
        upstream.clear()
        assert_allowed(adv.request("/adv", bearer(valid)), upstream)

    adv.on_every_worker(allowed)
    # Cached in every worker's VM: another round on every worker is answered from it only.
    hits = adv.counter("cache_hit")
    second_round = adv.on_every_worker(allowed)
    assert adv.counter("cache_hit") - hits == second_round
    variants = {
        "its-signature-on-an-edited-payload": (
            f"{head}.{tk.b64url_json({**claims, 'cognito:groups': ['admins']})}.{sig}"
        ),
        "its-signature-under-another-header": (
            f"{tk.b64url_json({'alg': 'RS256', 'kid': 'adv-rsa'})}.{payload}.{sig}"
        ),
        "its-signature-one-byte-flipped": mu.flip_signature_byte(valid, "last"),
        "its-signature-one-byte-short": mu.with_signature(valid, mu.signature_of(valid)[:-1]),
        "its-signature-non-canonical": _with_trailing_bit(valid),
        "it-plus-a-dot": valid + ".",
        "it-with-a-space-inside": f"{head}.{payload} .{sig}",
    }
    for name, token in variants.items():

        def refused(name=name, token=token):
            upstream.clear()
            resp = adv.request("/adv", bearer(token))
            assert resp.status == 401, f"{name}: {resp.describe()}"
            assert_invalid(resp, upstream)

        adv.on_every_worker(refused)


def test_expired_token_with_exp_zero_reads_expired(adv, upstream, world):
    # exp 0 is an integer (the right type), the signature is real: "expired", not invalid.
    assert_expired(adv.request("/adv", bearer(world.token(claims=world.claims(exp=0)))), upstream)


@pytest.mark.parametrize(
    "values",
    [
        ["Bearer {v}", "Bearer {v}"],
        ["Bearer {v}", "Bearer {f}"],
        ["Bearer {f}", "Bearer {v}"],
        ["Bearer {v}", "Basic YWxpY2U6cGFzc3dvcmQ="],
        ["{v}", "{v}"],
        ["Bearer {v}"] * 10,
        ["Bearer {v}", "Bearer"],
    ],
    ids=["same-valid-twice", "valid-then-forged", "forged-then-valid", "valid-then-basic",
         "raw-valid-twice", "same-valid-ten-times", "valid-then-bare-scheme"],
)  # fmt: skip
def test_several_authorization_headers_are_refused(adv, upstream, world, values):
    # Envoy joins repeated request headers into one value ("a,b"): never a token.
    valid, forged = world.token(), tk.with_flipped_signature(world.token())
    headers = [("authorization", v.format(v=valid, f=forged)) for v in values]

    assert_invalid(adv.request("/adv", headers), upstream)


def test_empty_second_authorization_header_is_dropped_by_envoy(adv, upstream, world):
    # Envoy drops an empty header value instead of joining it ("Bearer x,"): the filter and
    # the upstream both see the one valid token.
    valid = world.token()

    resp = adv.request("/adv", [("authorization", f"Bearer {valid}"), ("authorization", "")])

    received = assert_allowed(resp, upstream)
    assert received.header_values("authorization") == [f"Bearer {valid}"]


def _raw(envoy, authorization: bytes, extra: bytes = b"") -> tuple[int | None, bytes]:
    request = b"GET /adv HTTP/1.1\r\nHost: api\r\nAuthorization: " + authorization + b"\r\n"
    return raw_exchange(envoy.port, request + extra + b"\r\n")


# (how the header is bent, expected status). Envoy's HTTP/1 codec drops a bare CR inside a
# value and unfolds obs-fold, so those still carry the valid token (the upstream then gets
# exactly that token: the filter verified what the upstream reads); a bare LF or a NUL, VT or
# DEL is a 400 from the codec, before any filter.
CONTROL = {
    "bare-CR-inside-valid-token": (lambda v, f: v[:40] + b"\r" + v[40:], 200),
    "bare-CR-inside-forged-token": (lambda v, f: f[:40] + b"\r" + f[40:], 401),
    "bare-CR-then-extra-char": (lambda v, f: v[:40] + b"\rX" + v[40:], 401),
    "bare-LF-inside-valid-token": (lambda v, f: v[:40] + b"\n" + v[40:], 400),
    "LF-then-forged-identity-header": (lambda v, f: f + b"\nx-cognito-sub: admin", 401),
    "obs-fold-before-valid-token": (lambda v, f: b"Bearer\r\n " + v[7:], 200),
    "obs-fold-inside-token": (lambda v, f: v[:40] + b"\r\n " + v[40:], 401),
    "NUL-inside-valid-token": (lambda v, f: v[:40] + b"\x00" + v[40:], 400),
    "VT-inside-valid-token": (lambda v, f: v[:40] + b"\x0b" + v[40:], 400),
    "DEL-inside-valid-token": (lambda v, f: v[:40] + b"\x7f" + v[40:], 400),
}


@pytest.mark.parametrize("case", list(CONTROL), ids=list(CONTROL))
def test_control_characters_in_authorization_never_pass_a_bent_token(adv, upstream, world, case):
    valid = world.token()
    forged = tk.with_flipped_signature(valid)
    bend, expected = CONTROL[case]

    status, data = _raw(adv, bend(f"Bearer {valid}".encode(), f"Bearer {forged}".encode()))

    assert status == expected, data[:300]
    if expected == 200:
        (received,) = upstream.requests
        assert received.header("authorization") == f"Bearer {valid}"
        assert received.header("x-cognito-sub") == "sub-adv"
    else:
        assert upstream.requests == []
    if expected == 401:
        assert b'error="invalid_token"' in data, data[:300]


@pytest.mark.parametrize("envoy_name", ["adv", "big"])
@pytest.mark.parametrize("size", [70_000, 1 << 20], ids=["70-KB", "1-MiB"])
def test_token_over_envoys_header_limit_gets_431_before_the_filter(
    request, upstream, envoy_name, size
):
    envoy = request.getfixturevalue(envoy_name)
    outcomes = Outcomes(envoy)

    status, data = _raw(envoy, b"Bearer " + b"a" * size)

    assert status == 431, data[:300]  # Envoy's max_request_headers_kb (60 KiB), not the filter
    assert upstream.requests == []
    assert outcomes.changes() == {}


def test_large_valid_token_passes_when_max_token_bytes_allows_it(big, upstream, world):
    token = tk.sign_to_length(tk.SigningKey("adv-rsa", world.keys["rsa"].private),
                              world.claims(), 50_000)  # fmt: skip

    assert_allowed(big.request("/adv", bearer(token)), upstream)


def test_token_of_8193_bytes_passes_when_max_token_bytes_is_larger(big, upstream, world):
    token = tk.sign_to_length(tk.SigningKey("adv-rsa", world.keys["rsa"].private),
                              world.claims(), 8193)  # fmt: skip

    assert_allowed(big.request("/adv", bearer(token)), upstream)


NESTED = "[" * 10_000 + "]" * 10_000


@pytest.mark.parametrize(
    "where",
    ["payload-claim-array", "payload-claim-objects-and-arrays", "header-member",
     "whole-payload-array"],  # fmt: skip
)
def test_json_nested_10000_levels_is_refused_without_harm(big, upstream, world, where):
    # Signed with the real key: only the nesting is wrong. ~27 KB, under Envoy's limit.
    # Objects take 5 bytes a level: alternate them with arrays to stay under Envoy's limit.
    nested_objects = '[{"":' * 5_000 + "1" + "}]" * 5_000
    claims = _claims_json(world)
    header = '{"alg":"RS256","kid":"adv-rsa","typ":"JWT"}'
    payload, hdr = {
        "payload-claim-array": (claims[:-1] + f',"deep":{NESTED}}}', header),
        "payload-claim-objects-and-arrays": (claims[:-1] + f',"deep":{nested_objects}}}', header),
        "header-member": (claims, header[:-1] + f',"deep":{NESTED}}}'),
        "whole-payload-array": (NESTED, header),
    }[where]
    token = mu.signed(hdr.encode(), payload.encode(), world.keys["rsa"], "RS256")
    assert len(token) < 60_000
    outcomes = Outcomes(big)

    assert_invalid(big.request("/adv", bearer(token)), upstream)
    assert outcomes.changes() == {"denied_invalid": 1}


def test_same_nested_token_is_refused_by_size_on_the_default_envoy(adv, upstream, world):
    payload = (_claims_json(world)[:-1] + f',"deep":{NESTED}}}').encode()
    token = mu.signed({"alg": "RS256", "kid": "adv-rsa"}, payload, world.keys["rsa"], "RS256")

    assert_invalid(adv.request("/adv", bearer(token)), upstream)


KEY_URL_CASES = [c for c in INVALID if c.startswith(("jku-", "x5u-", "jwk-", "x5c-", "kid-"))]


def test_key_urls_were_never_contacted_and_kids_never_changed_the_jwks_path(
    adv, big, upstream, world, attacker, adv_jwks
):
    # Sent here, so the check holds whether or not the cases above ran: every token that
    # names a key URL, embeds a key or plays with the kid is refused; the attacker's server
    # saw nothing, and every JWKS fetch (first loads and unknown-kid refetches) asked for
    # the configured path only.
    assert len(KEY_URL_CASES) >= 10, KEY_URL_CASES
    for case in KEY_URL_CASES:
        upstream.clear()
        resp = adv.request("/adv", bearer(INVALID[case](world)))
        assert resp.status == 401, (case, resp.describe())
        assert upstream.requests == []
    _assert_attacker_untouched(attacker)
    paths = {f.path for f in adv_jwks.fetches()}
    assert paths <= {jwks_path(TEST_POOL)}, paths


def test_envoy_still_serves_after_the_adversarial_run(adv, big, upstream, world):
    for envoy in (adv, big):
        assert envoy.process.exit_code() is None
        assert envoy.admin("/ready").status == 200
        def allowed():
            upstream.clear()
            assert_allowed(envoy.request("/adv", bearer(world.token())), upstream)

        envoy.on_every_worker(allowed)
        assert "panicked" not in envoy.log_text()
