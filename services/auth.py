"""Logins, token refresh with rotation and reuse detection, logout, and per-request
authentication of access tokens and API keys."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import asyncpg

from services.api_keys import ApiKeyService
from services.errors import ErrorCode, Forbidden, RateLimited, ServiceError, Unauthenticated
from services.events import ACCESS_REVOKED, EventSink
from services.passwords import PasswordHasher
from services.revocations import RevocationCheck
from services.tokens import API_KEY_PREFIX, AccessTokens, new_opaque_token, token_hash
from storage import sessions, users
from storage.ratelimit import LoginThrottle
from storage.revocations import DISABLED, Revocations

log = logging.getLogger(__name__)

# Per-IP failures allowed, as a multiple of the per-username limit (CONTRACT.md §2).
IP_LIMIT_FACTOR = 5


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: int
    username: str
    tenant_id: int
    role: str
    permissions: frozenset[str]
    # The login session, or ``key-N`` for an API key: what revocation markers and
    # dashboard sockets know the credential by.
    sid: str
    expires_at: int
    api_key_id: int | None = None


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class AuthService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        revocations: Revocations,
        revocation_check: RevocationCheck,
        throttle: LoginThrottle,
        hasher: PasswordHasher,
        access_tokens: AccessTokens,
        permissions_by_role: dict[str, frozenset[str]],
        refresh_ttl_s: int,
        events: EventSink,
        api_keys: ApiKeyService,
    ) -> None:
        self._pool = pool
        self._api_keys = api_keys
        self._events = events
        self._revocations = revocations
        self._check = revocation_check
        self._throttle = throttle
        self._hasher = hasher
        self._access = access_tokens
        self._permissions = permissions_by_role
        self._refresh_ttl_s = refresh_ttl_s

    def permissions_of(self, role: str) -> frozenset[str]:
        return self._permissions.get(role, frozenset())

    async def login(self, username: str, password: str, client_ip: str) -> TokenPair:
        # Counted before the password is checked: concurrent guesses cannot pass the limit.
        retry_after = await self._throttle.attempt(username, client_ip)
        if retry_after is not None:
            raise RateLimited(retry_after)
        user = await users.by_username(self._pool, username)
        if not await self._hasher.verify(user.password_hash if user else None, password):
            raise ServiceError(code=ErrorCode.BAD_CREDENTIALS)
        assert user is not None
        await self._throttle.succeeded(username, client_ip)
        if user.status != "active" or user.tenant_status != "active":
            raise ServiceError(code=ErrorCode.DISABLED)
        sid = uuid.uuid4()
        refresh_token = new_opaque_token()
        async with self._pool.acquire() as conn, conn.transaction():
            await sessions.insert(conn, session_id=sid, user_id=user.id,
                                  token_hash=token_hash(refresh_token), ttl_s=self._refresh_ttl_s)
            await users.touch_login(conn, user.id)
        return self._pair(user, sid, refresh_token)

    async def refresh(self, refresh_token: str) -> TokenPair:
        outcome: ServiceError | None = None
        reused_sid: uuid.UUID | None = None
        new_token = new_opaque_token()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await sessions.lock_by_hash(conn, token_hash(refresh_token))
            if row is None or row.revoked or row.expired:
                raise ServiceError(code=ErrorCode.BAD_REFRESH_TOKEN)
            if row.used:
                # A used token coming back means it leaked: end the whole login.
                await sessions.revoke_session(conn, row.session_id, "reuse")
                reused_sid = row.session_id
                outcome = ServiceError(code=ErrorCode.BAD_REFRESH_TOKEN)
            else:
                user = await users.by_id(conn, row.user_id)
                if user is None or user.status != "active" or user.tenant_status != "active":
                    raise ServiceError(code=ErrorCode.DISABLED)
                await sessions.mark_used(conn, row.id)
                await sessions.insert(conn, session_id=row.session_id, user_id=user.id,
                                      token_hash=token_hash(new_token),
                                      ttl_s=self._refresh_ttl_s)
        if outcome is not None:
            assert reused_sid is not None
            log.warning("refresh token reused; session revoked", extra={"sid": str(reused_sid)})
            await self._revocations.revoke([str(reused_sid)], self._access.ttl_s)
            self._events.publish(ACCESS_REVOKED, {"sids": [str(reused_sid)]})
            raise outcome
        return self._pair(user, row.session_id, new_token)

    async def logout(self, principal: Principal, refresh_token: str | None) -> None:
        if principal.api_key_id is not None:
            raise Forbidden("an API key has no login to end; revoke the key instead")
        sids = {principal.sid}
        if refresh_token:
            other = await sessions.session_of_hash(self._pool, token_hash(refresh_token),
                                                   principal.user_id)
            if other is not None:
                sids.add(str(other))
        # Committed before the markers are written: PostgreSQL keeps the logout when Redis
        # loses them (the access token dies with its session, services/revocations.py).
        for sid in sids:
            await sessions.revoke_session_of_user(self._pool, uuid.UUID(sid), principal.user_id,
                                                  "logout")
        await self._revocations.revoke(sids, self._access.ttl_s)
        self._events.publish(ACCESS_REVOKED, {"sids": sorted(sids)})

    async def authenticate(self, token: str) -> Principal:
        if token.startswith(API_KEY_PREFIX):
            return await self._authenticate_key(token)
        claims = self._access.decode(token)
        await self._check_not_revoked(sid=claims.sid, user_id=claims.user_id,
                                      tenant_id=claims.tenant_id)
        return Principal(
            user_id=claims.user_id,
            username=claims.username,
            tenant_id=claims.tenant_id,
            role=claims.role,
            permissions=self.permissions_of(claims.role),
            sid=claims.sid,
            expires_at=claims.expires_at,
        )

    async def _authenticate_key(self, key: str) -> Principal:
        grant = await self._api_keys.lookup(key)
        await self._check_not_revoked(sid=grant.sid, user_id=grant.user_id,
                                      tenant_id=grant.tenant_id, api_key_id=grant.id)
        self._api_keys.note_use(grant.id)
        return Principal(
            user_id=grant.user_id,
            username=grant.username,
            tenant_id=grant.tenant_id,
            role=grant.role,
            # Never more than the role grants now: a user who loses a role loses it for
            # every key too.
            permissions=grant.permissions & self.permissions_of(grant.role),
            sid=grant.sid,
            expires_at=int(grant.expires_at),
            api_key_id=grant.id,
        )

    async def _check_not_revoked(self, *, sid: str, user_id: int, tenant_id: int,
                                 api_key_id: int | None = None) -> None:
        state = await self._check.state(sid=sid, user_id=user_id, tenant_id=tenant_id,
                                        api_key_id=api_key_id)
        if state == DISABLED:
            raise ServiceError(code=ErrorCode.DISABLED)
        if state is not None:
            raise Unauthenticated("token revoked")

    def _pair(self, user: users.User, sid: uuid.UUID, refresh_token: str) -> TokenPair:
        access = self._access.issue(user_id=user.id, username=user.username,
                                    tenant_id=user.tenant_id, role=user.role, sid=str(sid))
        return TokenPair(access_token=access, refresh_token=refresh_token,
                         expires_in=self._access.ttl_s)
