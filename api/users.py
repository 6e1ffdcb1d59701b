"""``/api/v1/admin/users``: platform staff and customers' users (CONTRACT.md §3a)."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from api.items import UserItem
from api.keys import PRINCIPAL, USERS
from api.models import Body, NumericId, Page, PageQuery, PathParams, TenantId
from api.routing import Routes
from services.errors import ErrorCode
from services.ids import parse_number
from services.rules import PASSWORD_MAX, PASSWORD_MIN, USERNAME_PATTERN

routes = Routes("users")

Role = Literal["admin", "operator", "customer"]
Password = Annotated[str, Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]


class UserIn(Body):
    username: Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
    password: Password
    role: Role
    tenant_id: TenantId | None = Field(
        None, description="the customer's id for a customer user; absent (or 0) for staff")


class UserPatch(Body):
    role: Role | None = Field(None, description="within staff only; absent: unchanged")


class PasswordReset(Body):
    password: Password


class UserQuery(PageQuery):
    role: Role | None = None
    tenant_id: TenantId | None = Field(None, description="0: platform staff")
    status: Literal["active", "disabled"] | None = None
    keyword: str | None = Field(None, max_length=64, description="part of the username")


class UserPath(PathParams):
    id: NumericId


def _user_id(request: web.Request) -> int:
    return parse_number(request.match_info["id"], "user")


@routes.get("/api/v1/admin/users", access="user:manage", summary="List users",
            query=UserQuery, response=Page[UserItem], description="Newest first.")
async def list_users(request: web.Request, query: UserQuery) -> Page[UserItem]:
    rows, total = await request.app[USERS].page(
        role=query.role, tenant_id=query.tenant_id, status=query.status, keyword=query.keyword,
        limit=query.page_size, offset=query.offset)
    return Page[UserItem](list=[UserItem.model_validate(dict(r)) for r in rows], total=total,
                          page=query.page, page_size=query.page_size)


@routes.post("/api/v1/admin/users", access="user:manage", summary="Create a user",
             body=UserIn, response=UserItem,
             errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT, ErrorCode.DUPLICATE),
             description="Admins and operators belong to the platform; a customer user "
                         "names an active customer (unknown: 404; disabled: 409). A taken "
                         "username is 409/40902.")
async def create_user(request: web.Request, body: UserIn) -> UserItem:
    row = await request.app[USERS].create(username=body.username, password=body.password,
                                          role=body.role, tenant_id=body.tenant_id)
    return UserItem.model_validate(dict(row))


@routes.patch("/api/v1/admin/users/{id}", access="user:manage", path_params=UserPath,
              summary="Change a user's role", body=UserPatch, response=UserItem,
              errors=(ErrorCode.CONFLICT,),
              description="Between admin and operator only (a customer cannot become staff, "
                          "nor staff a customer: 409), never taking the role from the last "
                          "enabled admin (409). A new role ends the user's logins.")
async def update_user(request: web.Request, body: UserPatch) -> UserItem:
    users = request.app[USERS]
    user_id = _user_id(request)
    if body.role is None:
        return UserItem.model_validate(dict(await users.get(user_id)))
    return UserItem.model_validate(dict(await users.set_role(user_id, body.role)))


@routes.post("/api/v1/admin/users/{id}/disable", access="user:manage", path_params=UserPath,
             summary="Disable a user", response=UserItem, errors=(ErrorCode.CONFLICT,),
             description="Its logins end at once on every hub process (access tokens get "
                         "40302, dashboards are closed). Never oneself, never the last enabled "
                         "admin (409).")
async def disable_user(request: web.Request) -> UserItem:
    row = await request.app[USERS].set_enabled(request[PRINCIPAL].user_id, _user_id(request),
                                                False)
    return UserItem.model_validate(dict(row))


@routes.post("/api/v1/admin/users/{id}/enable", access="user:manage", path_params=UserPath,
             summary="Enable a user again", response=UserItem,
             description="Logins ended by the disable stay ended: the user logs in anew.")
async def enable_user(request: web.Request) -> UserItem:
    row = await request.app[USERS].set_enabled(request[PRINCIPAL].user_id, _user_id(request),
                                                True)
    return UserItem.model_validate(dict(row))


@routes.post("/api/v1/admin/users/{id}/reset-password", access="user:manage",
             path_params=UserPath, summary="Set a user's password", body=PasswordReset,
             response=None, description="Ends every login of the user.")
async def reset_password(request: web.Request, body: PasswordReset) -> None:
    await request.app[USERS].reset_password(_user_id(request), body.password)
