"""Bearer tokens for AUTH_MODE=jwt tests: an HS256 secret, an RSA key pair, a token maker."""

from __future__ import annotations

import functools
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

JWT_SECRET = "test-jwt-secret-0123456789abcdef-0123456789"
AUDIENCE = "claims-realtime"
ISSUER = "https://idp.example.com"


@functools.cache
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_public_pem() -> str:
    return (
        rsa_private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_token(
    sub: str | None = "usr_owner",
    orgs: dict[str, list[str]] | None = None,
    *,
    key: Any = JWT_SECRET,
    algorithm: str = "HS256",
    expires_in: float = 300,
    **claims: Any,
) -> str:
    """A signed token; `sub=None` or `exp=None` leave those claims out."""
    payload: dict[str, Any] = {"exp": int(time.time() + expires_in), **claims}
    if sub is not None:
        payload["sub"] = sub
    if orgs is not None:
        payload["orgs"] = orgs
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
