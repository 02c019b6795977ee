"""Cognito-shaped tokens signed with a test RSA key, and hand-crafted broken ones.

moto's tokens cover the real thing; these cover what moto cannot produce: tokens that are
expired, from another issuer, for another client, of another token_use, oversized, or
signed in ways an attacker would try (alg none, HS256 with the public key, tampering).

Claim sets match Cognito's (https://docs.aws.amazon.com/cognito/latest/developerguide/
amazon-cognito-user-pools-using-the-id-token.html and ...-access-token.html)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REGION = "us-east-1"
COGNITO_SCOPE = "aws.cognito.signin.user.admin"


def cognito_issuer(pool_id: str) -> str:
    return f"https://cognito-idp.{pool_id.split('_', 1)[0]}.amazonaws.com/{pool_id}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SigningKey:
    """An RSA-2048 key with its kid; its public half is what the JWKS server publishes."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict:
        """The public key as Cognito publishes it (alg, e, kid, kty, n, use)."""
        numbers = self.private.public_key().public_numbers()

        def unsigned(value: int) -> str:
            return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return {
            "alg": "RS256",
            "e": unsigned(numbers.e),
            "kid": self.kid,
            "kty": "RSA",
            "n": unsigned(numbers.n),
            "use": "sig",
        }


def jwks(*keys: SigningKey) -> dict:
    return {"keys": [k.jwk() for k in keys]}


# --- claim sets --------------------------------------------------------------------------


def id_claims(
    issuer: str,
    client_id: str,
    username: str = "alice",
    groups: list[str] | None = None,
    lifetime: int = 3600,
    now: int | None = None,
    sub: str | None = None,
) -> dict:
    """An id token's payload as Cognito issues it (groups omitted when there are none)."""
    now = int(time.time()) if now is None else now
    claims = {
        "sub": sub or str(uuid.uuid4()),
        "aud": client_id,
        "email_verified": True,
        "iss": issuer,
        "cognito:username": username,
        "origin_jti": str(uuid.uuid4()),
        "token_use": "id",
        "auth_time": now,
        "exp": now + lifetime,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "email": f"{username}@example.com",
    }
    if groups:
        claims["cognito:groups"] = groups
    return claims


def access_claims(
    issuer: str,
    client_id: str,
    username: str = "alice",
    groups: list[str] | None = None,
    scope: str = COGNITO_SCOPE,
    lifetime: int = 3600,
    now: int | None = None,
    sub: str | None = None,
) -> dict:
    """An access token's payload as Cognito issues it (no `aud`; `client_id` instead)."""
    now = int(time.time()) if now is None else now
    claims = {
        "sub": sub or str(uuid.uuid4()),
        "iss": issuer,
        "client_id": client_id,
        "origin_jti": str(uuid.uuid4()),
        "token_use": "access",
        "scope": scope,
        "auth_time": now,
        "exp": now + lifetime,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "username": username,
    }
    if groups:
        claims["cognito:groups"] = groups
    return claims


def without(claims: dict, *names: str) -> dict:
    return {k: v for k, v in claims.items() if k not in names}


# --- signing -----------------------------------------------------------------------------


def sign(key: SigningKey, claims: dict, kid: str | None = None, alg: str = "RS256") -> str:
    """A correctly signed token; `kid` overrides the key's own (to name an unknown key)."""
    return jwt.encode(claims, key.private, algorithm=alg, headers={"kid": kid or key.kid})


def craft(header: dict, payload: dict, signature: bytes = b"") -> str:
    """A token assembled by hand, for the shapes PyJWT refuses to produce."""
    return f"{b64url_json(header)}.{b64url_json(payload)}.{b64url(signature)}"


def hs256_signed(header: dict, payload: dict, secret: bytes) -> str:
    """An HMAC-SHA256 token; with the RSA public key PEM as `secret` this is the classic
    algorithm-confusion attack on verifiers that trust the token's `alg`."""
    signing_input = f"{b64url_json(header)}.{b64url_json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def split(token: str) -> tuple[dict, dict, str]:
    """(header, payload, signature segment) without verifying anything."""
    header, payload, signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload)), signature


def with_flipped_signature(token: str) -> str:
    """The same token with one character in the middle of its signature changed."""
    head, payload, signature = token.split(".")
    i = len(signature) // 2
    replacement = "A" if signature[i] != "A" else "B"
    return f"{head}.{payload}.{signature[:i]}{replacement}{signature[i + 1 :]}"


def with_payload_changed(token: str, **changes) -> str:
    """The token's header and signature with a payload edited after signing."""
    head, _, signature = token.split(".")
    _, payload, _ = split(token)
    payload.update(changes)
    return f"{head}.{b64url_json(payload)}.{signature}"


def sign_to_length(key: SigningKey, claims: dict, length: int) -> str:
    """A validly signed token exactly `length` bytes long, padded by a `padding` claim.

    Base64url of n bytes is never 4k+1 characters long, so a header field of varying
    length is tried too until the total matches exactly."""
    base = len(sign(key, {**claims, "padding": ""}))
    for extra in range(0, 4):
        headers = {"kid": key.kid, **({"x": "y" * extra} if extra else {})}
        for pad in range(max(0, (length - base) * 3 // 4 - 8), length):
            token = jwt.encode(
                {**claims, "padding": "p" * pad}, key.private, algorithm="RS256", headers=headers
            )
            if len(token) == length:
                return token
            if len(token) > length:
                break
    raise ValueError(f"cannot make a token of exactly {length} bytes")
