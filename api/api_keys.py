"""``/api/v1/auth/api-keys``: the caller's API keys (CONTRACT.md §3a)."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from api.keys import API_KEYS, PRINCIPAL
from api.models import Body, PathParams, prefixed_id
from api.routing import AUTHENTICATED, Routes
from services.errors import ErrorCode
from services.ids import API_KEY, format_id, parse_id
from services.rules import NAME_MAX

routes = Routes("api-keys")

Permission = Annotated[str, StringConstraints(pattern=r"^[a-z_]+(:[a-z_]+)+$", max_length=64)]
_MANAGED_WITH_A_LOGIN = "Needs a login's access token: an API key cannot create or revoke keys."


class ApiKeyIn(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=NAME_MAX)]
    expires_in_days: int = Field(90, ge=1, le=3650)
    permissions: list[Permission] | None = Field(
        None, min_length=1, max_length=64,
        description="a subset of the caller's permissions; all of them when absent")


class ApiKeyItem(BaseModel):
    id: str = Field(examples=["key-12"])
    name: str
    prefix: str = Field(description="the key's first characters, to tell keys apart",
                        examples=["rgk_Xy3k9Qa1"])
    permissions: list[str]
    created_at: AwareDatetime
    expires_at: AwareDatetime
    last_used_at: AwareDatetime | None = Field(description="to the minute")

    @classmethod
    def from_row(cls, row: Any) -> ApiKeyItem:
        return cls.model_validate({**dict(row), "id": format_id(API_KEY, row["id"])})


class ApiKeyCreated(ApiKeyItem):
    key: str = Field(description="the key itself, shown only in this answer: send it as "
                                 "`Authorization: Bearer rgk_...`")


class ApiKeyPath(PathParams):
    id: prefixed_id(API_KEY)  # type: ignore[valid-type]


@routes.get("/api/v1/auth/api-keys", access=AUTHENTICATED, summary="List my API keys",
            response=list[ApiKeyItem],
            description="Newest first; revoked keys are gone, expired ones stay listed.")
async def list_api_keys(request: web.Request) -> list[ApiKeyItem]:
    rows = await request.app[API_KEYS].of_user(request[PRINCIPAL].user_id)
    return [ApiKeyItem.from_row(row) for row in rows]


@routes.post("/api/v1/auth/api-keys", access=AUTHENTICATED, summary="Create an API key",
             body=ApiKeyIn, response=ApiKeyCreated, errors=(ErrorCode.FORBIDDEN,),
             description="The key is returned once and stored only as a hash. A permission "
                         "the caller does not hold is 40001 naming it. A key never grants "
                         "more than its user's role does now. " + _MANAGED_WITH_A_LOGIN)
async def create_api_key(request: web.Request, body: ApiKeyIn) -> ApiKeyCreated:
    row, key = await request.app[API_KEYS].create(
        request[PRINCIPAL], name=body.name, expires_in_days=body.expires_in_days,
        permissions=body.permissions)
    return ApiKeyCreated.model_validate({**ApiKeyItem.from_row(row).model_dump(), "key": key})


@routes.delete("/api/v1/auth/api-keys/{id}", access=AUTHENTICATED, summary="Revoke an API key",
               path_params=ApiKeyPath, response=None,
               errors=(ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND),
               description="The key stops working at once on every hub process, and "
                           "dashboards opened with it are closed with 4001. Another user's "
                           "key is not found. " + _MANAGED_WITH_A_LOGIN)
async def revoke_api_key(request: web.Request) -> None:
    key_id = parse_id(API_KEY, request.match_info["id"], "API key")
    await request.app[API_KEYS].revoke(request[PRINCIPAL], key_id)
