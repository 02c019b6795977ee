"""Keys of every JOSE family the filter accepts, raw signing (any header bytes, any payload
bytes, any alg), signature surgery (byte flips, DER/raw ECDSA, high-S, s + n), and the
seeded mutation generator of the differential test.

`tokens.py` mints well-formed Cognito tokens with PyJWT; this module builds what PyJWT
refuses to build (non-string `kid`, duplicate member names, `crit`, `b64: false`, foreign
`jwk` headers...) and signs it with the real key, so that only the one property under test
is wrong."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .tokens import b64url, b64url_decode

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
# Order of the curves (for high-S variants).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
ALL_ALGS = (*RSA_ALGS, "ES256", "ES384", "EdDSA")


def _unsigned(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class Key:
    """A private key of one family: "RSA", "P-256", "P-384" or "Ed25519"."""

    kind: str
    private: object

    @classmethod
    def generate(cls, kind: str) -> Key:
        if kind == "RSA":
            return cls(kind, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if kind == "P-256":
            return cls(kind, ec.generate_private_key(ec.SECP256R1()))
        if kind == "P-384":
            return cls(kind, ec.generate_private_key(ec.SECP384R1()))
        if kind == "Ed25519":
            return cls(kind, ed25519.Ed25519PrivateKey.generate())
        raise ValueError(kind)

    @property
    def algs(self) -> tuple[str, ...]:
        return {"RSA": RSA_ALGS, "P-256": ("ES256",), "P-384": ("ES384",), "Ed25519": ("EdDSA",)}[
            self.kind
        ]

    @property
    def coordinate_size(self) -> int:
        return {"P-256": 32, "P-384": 48}[self.kind]

    @property
    def order(self) -> int:
        return {"P-256": P256_ORDER, "P-384": P384_ORDER}[self.kind]

    def jwk(self, kid: str, alg: str | None = None) -> dict:
        """The public JWK (with `alg` when given, `use: sig` always)."""
        public = self.private.public_key()
        if self.kind == "RSA":
            n = public.public_numbers()
            jwk = {"kty": "RSA", "n": _unsigned(n.n), "e": _unsigned(n.e)}
        elif self.kind in ("P-256", "P-384"):
            n = public.public_numbers()
            size = self.coordinate_size
            jwk = {
                "kty": "EC",
                "crv": self.kind,
                "x": b64url(n.x.to_bytes(size, "big")),
                "y": b64url(n.y.to_bytes(size, "big")),
            }
        else:
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        jwk["kid"] = kid
        jwk["use"] = "sig"
        if alg:
            jwk["alg"] = alg
        return jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_der(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes, alg: str) -> bytes:
        """The JOSE signature of `data` (ECDSA as raw r‖s, RSA-PSS with salt = hash size)."""
        if self.kind == "RSA":
            digest = HASHES[alg[2:]]()
            if alg.startswith("RS"):
                return self.private.sign(data, padding.PKCS1v15(), digest)
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return self.private.sign(data, pss, digest)
        if self.kind in ("P-256", "P-384"):
            der = self.private.sign(data, ec.ECDSA(HASHES[alg[2:]]()))
            return ecdsa_der_to_raw(der, self.coordinate_size)
        return self.private.sign(data)

    def self_signed_cert_der(self) -> bytes:
        """A self-signed certificate of this key (for `x5c` headers)."""
        import datetime

        name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "attacker")])
        now = datetime.datetime.now(datetime.timezone.utc)
        algorithm = None if self.kind == "Ed25519" else hashes.SHA256()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.private, algorithm)
        )
        return cert.public_bytes(serialization.Encoding.DER)


def json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _segment(part: dict | bytes | str) -> str:
    """A token segment: a dict as compact JSON, bytes as they are, str as already encoded."""
    if isinstance(part, str):
        return part
    return b64url(part if isinstance(part, bytes) else json_bytes(part))


def signed(header: dict | bytes | str, payload: dict | bytes | str, key: Key, alg: str) -> str:
    """`header.payload.signature` with the signature of `key` for `alg` over exactly these
    segments, whatever the header says."""
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode(), alg))}"


def jws(key: Key, kid, claims: dict | bytes, alg: str, **header_fields) -> str:
    """A token signed by `key`; header {"alg", "typ", "kid" (none if kid is ...), **fields}."""
    header = {"alg": alg, "typ": "JWT"}
    if kid is not ...:
        header["kid"] = kid
    header.update(header_fields)
    return signed(header, claims, key, alg)


# --- signature surgery -----------------------------------------------------------------------


def ecdsa_der_to_raw(der: bytes, size: int) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_raw_to_der(raw: bytes) -> bytes:
    half = len(raw) // 2
    r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    return encode_dss_signature(r, s)


def signature_of(token: str) -> bytes:
    return b64url_decode(token.rsplit(".", 1)[1])


def with_signature(token: str, signature: bytes) -> str:
    return f"{token.rsplit('.', 1)[0]}.{b64url(signature)}"


def flip_signature_byte(token: str, where: str) -> str:
    """The token with one byte of its decoded signature inverted (first, middle or last),
    re-encoded canonically."""
    sig = bytearray(signature_of(token))
    i = {"first": 0, "middle": len(sig) // 2, "last": len(sig) - 1}[where]
    sig[i] ^= 0xFF
    return with_signature(token, bytes(sig))


def high_s(token: str, key: Key) -> str:
    """The same ECDSA signature with s replaced by n - s: mathematically valid too."""
    sig = signature_of(token)
    size = key.coordinate_size
    r, s = sig[:size], int.from_bytes(sig[size:], "big")
    return with_signature(token, r + (key.order - s).to_bytes(size, "big"))


def is_high_s(token: str, key: Key) -> bool:
    s = int.from_bytes(signature_of(token)[key.coordinate_size :], "big")
    return s > key.order // 2


def rsa_signature_plus_modulus(token: str, key: Key) -> str | None:
    """s + n as a signature of the modulus length, when it fits (else None): a verifier that
    does not check s < n computes the same s^e mod n."""
    sig = signature_of(token)
    n = key.private.public_key().public_numbers().n
    bigger = int.from_bytes(sig, "big") + n
    if bigger >= 1 << (8 * len(sig)):
        return None
    return with_signature(token, bigger.to_bytes(len(sig), "big"))


# --- re-encodings ------------------------------------------------------------------------


def std_b64(data: bytes, pad: bool = False) -> str:
    text = base64.b64encode(data).decode()
    return text if pad else text.rstrip("=")


def padded(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4)


def resegment(token: str, index: int, transform) -> str:
    parts = token.split(".")
    parts[index] = transform(parts[index])
    return ".".join(parts)


# --- the differential generator ------------------------------------------------------------


@dataclass
class Mutant:
    """A generated token: its family (generator step), a label, and — when the mutation
    breaks a rule that only Cognito (this filter) enforces — that rule's name, so that a
    refusal by the filter alone is an expected difference rather than a surprise."""

    token: str
    family: str
    label: str
    cognito_rule: str | None = None
    # Valid by construction (signed by the real key, a legal shape): the filter must allow it.
    meant_valid: bool = False


@dataclass(frozen=True)
class Seed:
    """A valid token's ingredients: re-signing with edited claims starts from these."""

    name: str
    key: Key
    kid: str
    alg: str
    header: dict
    claims: dict
    # The `alg` of the key's JWK (None: the JWK has none).
    jwk_alg: str | None = None

    def token(self) -> str:
        return signed(self.header, self.claims, self.key, self.alg)

    def resign(self, claims: dict | bytes | None = None, header: dict | bytes | None = None,
               alg: str | None = None) -> str:  # fmt: skip
        return signed(
            self.header if header is None else header,
            self.claims if claims is None else claims,
            self.key,
            alg or self.alg,
        )


# Characters a header value may carry unchanged (printable ASCII without space).
_PRINTABLE = {chr(c) for c in range(0x21, 0x7F)}


def _flip_decoded_bit(rng: random.Random, segment: str) -> str:
    raw = bytearray(b64url_decode(segment))
    if not raw:
        return segment
    i = rng.randrange(len(raw))
    raw[i] ^= 1 << rng.randrange(8)
    return b64url(bytes(raw))


def _flip_char_bit(rng: random.Random, segment: str) -> str | None:
    if not segment:
        return None
    for _ in range(8):
        i = rng.randrange(len(segment))
        c = chr(ord(segment[i]) ^ (1 << rng.randrange(7)))
        if c in _PRINTABLE and c != segment[i]:
            return segment[:i] + c + segment[i + 1 :]
    return None


def generate(seeds: list[Seed], now: int, issuer: str, client: str, other_client: str,
             rng_seed: int = 20261126, flips_per_segment: int = 300) -> list[Mutant]:  # fmt: skip
    """A few thousand mutants of `seeds` (deterministic for a given seed and `now`)."""
    rng = random.Random(rng_seed)
    out: list[Mutant] = []
    originals = {s.name: s.token() for s in seeds}

    def add(token, family, label, rule=None, meant_valid=False):
        out.append(Mutant(token, family, label, rule, meant_valid))

    # 0. the originals, as they are.
    for name, token in originals.items():
        add(token, "original", name, meant_valid=True)

    # 1. bit flips, in decoded bytes (canonical re-encoding) and in the characters.
    for name, token in originals.items():
        for index, segment_name in enumerate(("header", "payload", "signature")):
            for n in range(flips_per_segment):
                if n % 2 == 0:
                    mutated = resegment(token, index, lambda s: _flip_decoded_bit(rng, s))
                    how = "decoded"
                else:
                    parts = token.split(".")
                    flipped = _flip_char_bit(rng, parts[index])
                    if flipped is None:
                        continue
                    parts[index] = flipped
                    mutated = ".".join(parts)
                    how = "char"
                if mutated != token:
                    add(mutated, f"bitflip-{segment_name}", f"{name} {how} #{n}")

    # 2. segment swaps between tokens (every combination but the originals).
    split = {n: t.split(".") for n, t in originals.items()}
    names = list(split)
    for h in names:
        for p in names:
            for s in names:
                if h == p == s:
                    continue
                token = f"{split[h][0]}.{split[p][1]}.{split[s][2]}"
                # Same signing input as the signature's token: it is still that token.
                same = split[h][0] == split[s][0] and split[p][1] == split[s][1]
                add(token, "segment-swap", f"h={h} p={p} s={s}", meant_valid=same)

    # 3. re-encodings of the originals.
    for name, token in originals.items():
        parts = token.split(".")
        for index, segment_name in enumerate(("header", "payload", "signature")):
            if len(parts[index]) % 4:
                add(resegment(token, index, padded), "re-encoding", f"{name} padded {segment_name}",
                    "canonical base64url (no padding)")  # fmt: skip
            std = std_b64(b64url_decode(parts[index]))
            if std != parts[index]:
                add(resegment(token, index, lambda _s, std=std: std), "re-encoding",
                    f"{name} std-base64 {segment_name}", "canonical base64url (no +/)")  # fmt: skip
            # Non-canonical last character: unused low bits set (same decoded bytes).
            rem = len(parts[index]) % 4
            if rem in (2, 3):
                last = parts[index][-1]
                alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                value = alphabet.index(last) | (1 if rem == 3 else 3)
                if alphabet[value] != last:
                    add(resegment(token, index, lambda s, c=alphabet[value]: s[:-1] + c),
                        "re-encoding", f"{name} non-canonical-trailing-bits {segment_name}",
                        "canonical base64url (trailing bits)")  # fmt: skip
            mid = len(parts[index]) // 2
            for ws, ws_name in ((" ", "space"), ("\t", "tab")):
                add(resegment(token, index, lambda s, ws=ws: s[:mid] + ws + s[mid:]),
                    "re-encoding", f"{name} {ws_name} inside {segment_name}",
                    "no whitespace inside the token")  # fmt: skip
        add(token + " ", "re-encoding", f"{name} trailing space", meant_valid=True)
        add(token + " junk", "re-encoding", f"{name} trailing word",
            "no whitespace inside the token")  # fmt: skip
        add(token + "=", "re-encoding", f"{name} trailing '='", "canonical base64url (no padding)")
        add(token + ".", "re-encoding", f"{name} trailing dot")
        add("." + token, "re-encoding", f"{name} leading dot")

    # 4. claim and header edits, re-signed with the real key.
    for seed in seeds:
        c = seed.claims
        is_access = c.get("token_use") == "access"

        def edit(label, rule=None, valid=False, drop=(), seed=seed, **changes):
            claims = {k: v for k, v in seed.claims.items() if k not in drop}
            claims.update(changes)
            add(seed.resign(claims), "claims", f"{seed.name} {label}", rule, valid)

        edit("exp past (-3600)", exp=now - 3600)
        edit("exp past beyond skew (-120)", exp=now - 120)
        edit("exp past within skew (-10)", valid=True, exp=now - 10)
        edit("exp future (+3600)", valid=True, exp=now + 3600)
        edit("exp far future (2100)", valid=True, exp=4102444800)
        edit("exp beyond 2106 (2^32+1)", "time claims within u32 (year 2106)", exp=(1 << 32) + 1)
        edit("exp missing", "exp required", drop=("exp",))
        edit("exp string", "time claims are integers", exp=str(now + 3600))
        edit("exp float", "time claims are integers", exp=float(now + 3600) + 0.5)
        edit("exp integral float", "time claims are integers", exp=float(now + 3600))
        edit("exp negative", exp=-1)
        edit("exp null", "time claims are integers", exp=None)
        edit("exp 1e300", exp=1e300)
        edit("exp u64 overflow", exp=1 << 64)
        edit("exp bool", "time claims are integers", exp=True)
        edit("nbf future beyond skew (+120)", nbf=now + 120)
        edit("nbf future within skew (+20)", valid=True, nbf=now + 20)
        edit("nbf past", valid=True, nbf=now - 3600)
        edit("nbf string", "time claims are integers", nbf=str(now))
        edit("nbf float", "time claims are integers", nbf=now - 0.5)
        edit("nbf null", "time claims are integers", nbf=None)
        edit("iat future beyond skew (+120)", "iat not in the future", iat=now + 120)
        edit("iat future within skew (+20)", valid=True, iat=now + 20)
        edit("iat string", "time claims are integers", iat=str(now))
        edit("iat float", "time claims are integers", iat=now + 0.25)
        edit("iat null", "time claims are integers", iat=None)
        edit("iat missing", valid=True, drop=("iat",))
        for label, iss in (
            ("iss trailing slash", issuer + "/"),
            ("iss upper case", issuer.upper()),
            ("iss http", issuer.replace("https://", "http://")),
            ("iss other pool", issuer.rsplit("/", 1)[0] + "/us-east-1_Other"),
            ("iss with space", issuer + " "),
            ("iss number", 5),
            ("iss list", [issuer]),
            ("iss null", None),
        ):
            edit(label, iss=iss)
        edit("iss missing", drop=("iss",))
        if is_access:
            edit("client_id other", "client_id among client_ids", client_id=other_client)
            edit("client_id missing", "client_id among client_ids", drop=("client_id",))
            edit("client_id number", "claim types", client_id=5)
            edit("client_id list", "claim types", client_id=[client])
            # An access token's client is its client_id; an aud is not read (Cognito's
            # access tokens have none).
            edit("aud added (other)", valid=True, aud=other_client)
            edit("aud added (client) instead of client_id", "client_id among client_ids",
                 drop=("client_id",), aud=client)  # fmt: skip
        else:
            edit("aud other", "aud among client_ids", aud=other_client)
            edit("aud list with client", valid=True, aud=[other_client, client])
            edit("aud list without client", "aud among client_ids", aud=[other_client])
            edit("aud empty list", "aud among client_ids", aud=[])
            edit("aud missing", "aud among client_ids", drop=("aud",))
            edit("aud number", aud=5)
            edit("aud object", aud={"a": client})
            edit("aud list of number", aud=[5])
        for label, use in (
            ("token_use refresh", "refresh"),
            ("token_use ID", "ID"),
            ("token_use empty", ""),
            ("token_use number", 1),
            ("token_use list", [c.get("token_use")]),
            ("token_use null", None),
            ("token_use swapped", "id" if is_access else "access"),
        ):
            edit(label, "token_use present and allowed", token_use=use)
        edit("token_use missing", "token_use present and allowed", drop=("token_use",))
        edit("sub number", "claim types", sub=5)
        edit("scope list", "claim types", scope=["a", "b"])
        edit("cognito:groups string", "claim types", **{"cognito:groups": "admins"})
        edit("jti number", "claim types", jti=5)
        edit("extra claim", valid=True, extra="x" * 50)

        # header edits, re-signed
        h = seed.header

        def hedit(label, header, rule=None, valid=False, alg=None, seed=seed):
            add(seed.resign(header=header, alg=alg), "header", f"{seed.name} {label}", rule, valid)

        hedit("kid missing", {k: v for k, v in h.items() if k != "kid"}, "kid required")
        hedit("kid empty", {**h, "kid": ""}, "kid required")
        hedit("kid unknown", {**h, "kid": "no-such-kid"})
        hedit("kid number", {**h, "kid": 1}, "kid required")
        hedit("kid null", {**h, "kid": None}, "kid required")
        hedit("kid object", {**h, "kid": {"a": 1}}, "kid required")
        hedit("typ missing", {k: v for k, v in h.items() if k != "typ"}, valid=True)
        hedit("typ at+jwt", {**h, "typ": "at+jwt"}, valid=True)
        hedit("crit exp", {**h, "crit": ["exp"]}, "crit refused")
        hedit("crit empty", {**h, "crit": []}, "crit refused")
        hedit("b64 false", {**h, "b64": False, "crit": ["b64"]}, "crit refused")
        hedit("b64 false without crit", {**h, "b64": False}, "b64 false refused")
        hedit("b64 true", {**h, "b64": True}, valid=True)
        hedit("jku local", {**h, "jku": "http://127.0.0.1:9/jwks.json"}, valid=True)
        hedit("x5u local", {**h, "x5u": "http://127.0.0.1:9/cert.pem"}, valid=True)
        hedit("alg lower case", {**h, "alg": seed.alg.lower()}, alg=seed.alg)
        hedit("alg none", {**h, "alg": "none"}, alg=seed.alg)
        hedit("alg HS256", {**h, "alg": "HS256"}, alg=seed.alg)
        hedit("alg missing", {k: v for k, v in h.items() if k != "alg"}, alg=seed.alg)
        hedit("alg number", {**h, "alg": 256}, alg=seed.alg)
        for other in seed.key.algs:
            if other != seed.alg:
                if seed.jwk_alg is None:  # the JWK serves every algorithm of its family
                    hedit(f"alg {other} re-signed", {**h, "alg": other}, valid=True, alg=other)
                else:
                    hedit(f"alg {other} re-signed", {**h, "alg": other},
                          "alg equals the JWK's alg", alg=other)  # fmt: skip

        # duplicate member names, re-signed (JSON text built by hand)
        header_json = json_bytes(h).decode()
        payload_json = json_bytes(c).decode()
        dup = "duplicate member names refused"
        hedit("duplicate alg (same)", (header_json[:-1] + f',"alg":"{seed.alg}"}}').encode(), dup)
        hedit("duplicate kid (other)", (header_json[:-1] + ',"kid":"other"}').encode(), dup)
        add(seed.resign(claims=(payload_json[:-1] + ',"sub":"evil"}').encode()), "claims",
            f"{seed.name} duplicate sub", dup)  # fmt: skip
        add(seed.resign(claims=(payload_json[:-1] + f',"exp":{now - 3600}}}').encode()),
            "claims", f"{seed.name} duplicate exp (past last)", dup)  # fmt: skip
        add(seed.resign(claims=('{"exp":1,' + payload_json[1:]).encode()), "claims",
            f"{seed.name} duplicate exp (past first)", dup)  # fmt: skip
        add(seed.resign(claims=(payload_json[:-1] + f',"iss":"{issuer}/x"}}').encode()),
            "claims", f"{seed.name} duplicate iss", dup)  # fmt: skip
        add(seed.resign(claims=b"[1,2]"), "claims", f"{seed.name} payload JSON array")
        add(seed.resign(claims=b"not json"), "claims", f"{seed.name} payload not JSON")
        add(seed.resign(claims=json_bytes(c) + b" "), "claims",
            f"{seed.name} payload trailing space", meant_valid=True)  # fmt: skip
        add(seed.resign(claims=json_bytes(c) + b"x"), "claims",
            f"{seed.name} payload trailing junk")  # fmt: skip
        add(seed.resign(claims=b"\xef\xbb\xbf" + json_bytes(c)), "claims",
            f"{seed.name} payload with BOM")  # fmt: skip
        add(seed.resign(header=b"[1]"), "header", f"{seed.name} header JSON array")

    # 5. truncations.
    for name, token in originals.items():
        cuts = sorted({rng.randrange(1, len(token)) for _ in range(40)} | {len(token) - 1})
        for cut in cuts:
            add(token[:cut], "truncation", f"{name} first {cut} chars")
        parts = token.split(".")
        add(f"{parts[0]}.{parts[1]}", "truncation", f"{name} no signature segment")
        add(f"{parts[0]}.{parts[1]}.", "truncation", f"{name} empty signature")
        add(f"{parts[1]}.{parts[2]}", "truncation", f"{name} no header segment")
    return out
