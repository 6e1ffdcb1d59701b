"""Access tokens (HS256 JWTs) and the opaque random tokens stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from services.errors import ErrorCode, ServiceError, Unauthenticated

ISSUER = "remotegpu"
_ALGORITHM = "HS256"
# API keys (CONTRACT.md §3a) start with this: a bearer token says which kind it is, and a
# key pasted where it does not belong (a request body) is recognised and redacted.
API_KEY_PREFIX = "rgk_"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    username: str
    tenant_id: int
    role: str
    sid: str
    jti: str
    expires_at: int


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + new_opaque_token()


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AccessTokens:
    def __init__(self, secret: str, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, *, user_id: int, username: str, tenant_id: int, role: str,
              sid: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": str(user_id),
            "usr": username,
            "tid": tenant_id,
            "role": role,
            "sid": sid,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + self.ttl_s,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def decode(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid", "jti", "tid", "role"]},
            )
            return AccessClaims(
                user_id=int(claims["sub"]),
                username=str(claims.get("usr", "")),
                tenant_id=int(claims["tid"]),
                role=str(claims["role"]),
                sid=str(claims["sid"]),
                jti=str(claims["jti"]),
                expires_at=int(claims["exp"]),
            )
        except jwt.ExpiredSignatureError:
            raise ServiceError(code=ErrorCode.TOKEN_EXPIRED) from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise Unauthenticated("invalid token") from None
