"""Bench key, JWKS and Cognito-shaped RS256 access tokens, cached under target/bench/.

The key (RSA-2048) is generated once and kept in `target/bench/key.pem`; token files live in
`target/bench/tokens-<kid>/` (so a new key never meets old tokens) and are reused while they
stay valid long enough for a whole bench run. Signing costs ~0.4 ms per token natively, so the
tens of thousands of fresh tokens are minted by one process per core.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

REGION = "us-east-1"
POOL_ID = "us-east-1_BenchPool"
ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"
JWKS_PATH = f"/{POOL_ID}/.well-known/jwks.json"
JWKS_URI = f"{ISSUER}/.well-known/jwks.json"
CLIENT_ID = "3benchclient0example0id7x"
SCOPE = "aws.cognito.signin.user.admin bench/read"
LIFETIME = 3600  # Cognito's default access-token lifetime
# Token files are re-minted when fewer seconds than this remain before they expire (a full
# bench run takes under 10 minutes).
MIN_REMAINING = 900


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tmp.replace(path)
    return key


def public_jwk(key: rsa.RSAPrivateKey) -> dict:
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    # Cognito's kids are base64 digests of the key; this one is derived from the modulus too,
    # so the token cache directory changes whenever the key does.
    kid = "bench-" + hashlib.sha256(n).hexdigest()[:16]
    return {"alg": "RS256", "e": b64url(e), "kid": kid, "kty": "RSA", "n": b64url(n), "use": "sig"}


def _mint_chunk(args: tuple[str, str, int, int, int]) -> list[str]:
    """Mints `count` tokens in a worker process (the key is passed as PEM)."""
    pem, kid, iat, start, count = args
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    header = b64url(json.dumps({"kid": kid, "alg": "RS256"}, separators=(",", ":")).encode())
    out = []
    for i in range(start, start + count):
        sub = str(uuid.uuid4())
        payload = {
            "sub": sub,
            "iss": ISSUER,
            "client_id": CLIENT_ID,
            "origin_jti": str(uuid.uuid4()),
            "event_id": str(uuid.uuid4()),
            "token_use": "access",
            "scope": SCOPE,
            "auth_time": iat,
            "exp": iat + LIFETIME,
            "iat": iat,
            "jti": str(uuid.uuid4()),
            "username": f"bench-user-{i}",
        }
        signing_input = header + "." + b64url(json.dumps(payload, separators=(",", ":")).encode())
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        out.append(signing_input + "." + b64url(signature))
    return out


def mint(key: rsa.RSAPrivateKey, kid: str, count: int, iat: int, first_index: int = 0) -> list[str]:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    if count < 2000:
        return _mint_chunk((pem, kid, iat, first_index, count))
    workers = max(1, os.cpu_count() or 1)
    chunk = -(-count // (workers * 4))
    jobs = [
        (pem, kid, iat, first_index + s, min(chunk, count - s)) for s in range(0, count, chunk)
    ]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [t for part in pool.map(_mint_chunk, jobs) for t in part]


def corrupt_signature(token: str) -> str:
    """Same header and payload, a signature with one bit flipped in its middle byte: a
    well-formed token that only a full RSA verification can refuse."""
    head, payload, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64url(bytes(raw))}"


class TokenSet:
    """The token files of one bench run (one token per line)."""

    def __init__(self, root: Path, fresh_count: int, log=print):
        self.key = load_or_create_key(root / "key.pem")
        self.jwk = public_jwk(self.key)
        self.kid = self.jwk["kid"]
        self.jwks = json.dumps({"keys": [self.jwk]}, separators=(",", ":"))
        self.dir = root / f"tokens-{self.kid}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.one = self._file("one", 1)
        self.thousand = self._file("thousand", 1000)
        self.invalid = self._file("invalid", 1000, transform=corrupt_signature)
        self.fresh = self._file("fresh", fresh_count)
        self.mixed = self.dir / "mixed.txt"
        valid = self.lines(self.thousand)
        bad = self.lines(self.invalid)
        # Alternating valid/invalid: exactly half of any run's requests carry a bad signature.
        mixed = [t for pair in zip(valid, bad) for t in pair]
        self._write(self.mixed, mixed)
        self.fresh_count = len(self.lines(self.fresh))

    @staticmethod
    def lines(path: Path) -> list[str]:
        return path.read_text().split()

    @staticmethod
    def _write(path: Path, tokens: list[str]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(tokens) + "\n")
        tmp.replace(path)

    def _file(self, name: str, count: int, transform=None) -> Path:
        path = self.dir / f"{name}.txt"
        meta_path = self.dir / f"{name}.json"
        now = int(time.time())
        try:
            meta = json.loads(meta_path.read_text())
            if meta["count"] >= count and meta["exp"] - now >= MIN_REMAINING and path.exists():
                return path
        except (OSError, ValueError, KeyError):
            pass
        started = time.monotonic()
        tokens = mint(self.key, self.kid, count, now)
        if transform:
            tokens = [transform(t) for t in tokens]
        self._write(path, tokens)
        meta_path.write_text(json.dumps({"count": count, "exp": now + LIFETIME}))
        self.log(f"minted {count} {name} token(s) in {time.monotonic() - started:.1f} s")
        return path

    def verify_ceiling(self) -> str:
        """The verify ceiling's configuration (tests/noop-filter): one valid token's RS256
        signature, its signing input and the key as SPKI DER, the arguments the authorizer
        gives Envoy's verify_signature for that token."""
        spki = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signing_input, signature = self.sample_valid().rsplit(".", 1)
        return f"verify sha256 {spki.hex()} {b64url_decode(signature).hex()} {signing_input.encode().hex()}"

    def sample_valid(self) -> str:
        return self.lines(self.one)[0]

    def sample_invalid(self) -> str:
        return self.lines(self.invalid)[0]
