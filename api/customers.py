"""``/api/v1/admin/customers``: tenants and their first user."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from api.keys import CUSTOMERS
from api.models import Body, Page, PageQuery
from api.routing import Routes
from services.errors import ErrorCode
from services.ids import parse_number
from services.rules import NAME_MAX, PASSWORD_MAX, PASSWORD_MIN, USERNAME_PATTERN

routes = Routes("customers")


class CustomerIn(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=NAME_MAX)]
    contact_name: Annotated[str, StringConstraints(strip_whitespace=True,
                                                   max_length=NAME_MAX)] | None = None
    contact_email: Annotated[str, StringConstraints(
        strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None \
        = None
    username: Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class CustomerCreated(BaseModel):
    id: int
    name: str
    status: Literal["active", "disabled"]
    user_id: int
    username: str


class CustomerItem(BaseModel):
    id: int
    name: str
    contact_name: str | None
    contact_email: str | None
    status: Literal["active", "disabled"]
    machine_count: int = Field(description="machines the customer holds now")
    created_at: AwareDatetime


class CustomerQuery(PageQuery):
    keyword: str | None = Field(None, max_length=128, description="part of name or contact")
    status: Literal["active", "disabled"] | None = None


def _tenant_id(request: web.Request) -> int:
    return parse_number(request.match_info["id"], "customer")


@routes.post("/api/v1/admin/customers", access="customer:manage",
             summary="Create a customer and its first user", body=CustomerIn,
             response=CustomerCreated, errors=(ErrorCode.DUPLICATE,),
             description="One transaction; a taken name or username is 409/40902.")
async def create_customer(request: web.Request, body: CustomerIn) -> CustomerCreated:
    tenant, user_id = await request.app[CUSTOMERS].create(
        name=body.name, contact_name=body.contact_name, contact_email=body.contact_email,
        username=body.username, password=body.password,
    )
    return CustomerCreated(id=tenant["id"], name=tenant["name"], status=tenant["status"],
                           user_id=user_id, username=body.username)


@routes.get("/api/v1/admin/customers", access="customer:read", summary="List customers",
            query=CustomerQuery, response=Page[CustomerItem], description="Newest first.")
async def list_customers(request: web.Request, query: CustomerQuery) -> Page[CustomerItem]:
    rows, total = await request.app[CUSTOMERS].page(keyword=query.keyword, status=query.status,
                                                    limit=query.page_size, offset=query.offset)
    return Page[CustomerItem](list=[CustomerItem.model_validate(dict(r)) for r in rows],
                              total=total, page=query.page, page_size=query.page_size)


@routes.post("/api/v1/admin/customers/{id}/disable", access="customer:manage",
             summary="Disable a customer", response=CustomerItem,
             errors=(ErrorCode.NOT_FOUND,),
             description="Its users' logins end at once: refresh tokens are revoked and "
                         "access tokens fail with 40302 from the next request.")
async def disable_customer(request: web.Request) -> CustomerItem:
    return await _set_enabled(request, False)


@routes.post("/api/v1/admin/customers/{id}/enable", access="customer:manage",
             summary="Enable a customer again", response=CustomerItem,
             errors=(ErrorCode.NOT_FOUND,))
async def enable_customer(request: web.Request) -> CustomerItem:
    return await _set_enabled(request, True)


async def _set_enabled(request: web.Request, enabled: bool) -> CustomerItem:
    customers = request.app[CUSTOMERS]
    tenant_id = _tenant_id(request)
    await customers.set_enabled(tenant_id, enabled)
    return CustomerItem.model_validate(dict(await customers.get(tenant_id)))
