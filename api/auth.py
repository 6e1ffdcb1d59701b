"""``/api/v1/auth``: login, refresh, logout, profile (CONTRACT.md §2)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from api.keys import AUTH, PRINCIPAL, USERS
from api.middlewares import client_ip
from api.models import Body
from api.routing import AUTHENTICATED, PUBLIC, Routes
from services.errors import ErrorCode
from services.rules import PASSWORD_MAX, PASSWORD_MIN

routes = Routes("auth")


class LoginIn(Body):
    # Login accepts any string and simply fails (CONTRACT.md §1a); only sizes are bounded.
    username: str = Field(max_length=256)
    password: str = Field(max_length=1024)


class RefreshIn(Body):
    refresh_token: str = Field(max_length=256)


class LogoutIn(Body):
    refresh_token: str | None = Field(None, max_length=256)


class PasswordChange(Body):
    # Like login's, the current password is any string and simply fails when wrong.
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class LoginOut(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int = Field(description="access token lifetime, seconds")
    token_type: str = "Bearer"


class RefreshOut(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


class ProfileOut(BaseModel):
    id: int
    username: str
    role: str
    tenant_id: int = Field(description="0 for platform staff")
    permissions: list[str]


@routes.post(
    "/api/v1/auth/login", access=PUBLIC, summary="Log in with username and password",
    body=LoginIn, response=LoginOut,
    errors=(ErrorCode.BAD_CREDENTIALS, ErrorCode.DISABLED, ErrorCode.RATE_LIMITED),
    description="Failures are rate limited per username and per client IP (429 with "
                "Retry-After). A disabled account with the right password gets 40302.",
)
async def login(request: web.Request, body: LoginIn) -> LoginOut:
    pair = await request.app[AUTH].login(body.username, body.password, client_ip(request) or "")
    return LoginOut(access_token=pair.access_token, refresh_token=pair.refresh_token,
                    expires_in=pair.expires_in)


@routes.post(
    "/api/v1/auth/refresh", access=PUBLIC, summary="Exchange a refresh token for new tokens",
    body=RefreshIn, response=RefreshOut,
    errors=(ErrorCode.BAD_REFRESH_TOKEN, ErrorCode.DISABLED),
    description="Refresh tokens are single use: each call returns a new one. Presenting a "
                "used one revokes the whole login (reuse detection).",
)
async def refresh(request: web.Request, body: RefreshIn) -> RefreshOut:
    pair = await request.app[AUTH].refresh(body.refresh_token)
    return RefreshOut(access_token=pair.access_token, refresh_token=pair.refresh_token,
                      expires_in=pair.expires_in)


@routes.post(
    "/api/v1/auth/logout", access=AUTHENTICATED, summary="End this login",
    body=LogoutIn, response=None, errors=(ErrorCode.FORBIDDEN,),
    description="The access token and every refresh token of its login stop working at once. "
                "An API key has no login to end (40301): revoke the key instead.",
)
async def logout(request: web.Request, body: LogoutIn) -> None:
    await request.app[AUTH].logout(request[PRINCIPAL], body.refresh_token)


@routes.get("/api/v1/auth/profile", access=AUTHENTICATED, summary="Who am I",
            response=ProfileOut)
async def profile(request: web.Request) -> ProfileOut:
    principal = request[PRINCIPAL]
    return ProfileOut(id=principal.user_id, username=principal.username, role=principal.role,
                      tenant_id=principal.tenant_id, permissions=sorted(principal.permissions))


@routes.post(
    "/api/v1/auth/password", access=AUTHENTICATED, summary="Change one's own password",
    body=PasswordChange, response=None,
    errors=(ErrorCode.BAD_CREDENTIALS, ErrorCode.FORBIDDEN, ErrorCode.RATE_LIMITED),
    description="A wrong current password is 40103 and changes nothing (guesses count against "
                "the login rate limit: 429). Every other login of the user ends at once; "
                "this one goes on. Not with an API key (40301).",
)
async def change_password(request: web.Request, body: PasswordChange) -> None:
    await request.app[USERS].change_own_password(
        request[PRINCIPAL], current=body.current_password, new=body.new_password,
        client_ip=client_ip(request) or "")
