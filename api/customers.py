"""``/api/v1/admin/customers``: tenants and their first user."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from api.items import UserItem
from api.keys import CUSTOMERS
from api.models import Body, NumericId, Page, PageQuery, PathParams
from api.routing import Routes
from services.errors import ErrorCode
from services.ids import MAX_BIGINT, parse_number
from services.rules import NAME_MAX, PASSWORD_MAX, PASSWORD_MIN, USERNAME_PATTERN

routes = Routes("customers")


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                        max_length=NAME_MAX)]
ContactName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=NAME_MAX)]
ContactEmail = Annotated[str, StringConstraints(
    strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class CustomerIn(Body):
    name: Name
    contact_name: ContactName | None = None
    contact_email: ContactEmail | None = None
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


class CustomerPatch(Body):
    """Only the fields sent change; null clears a contact field, and gives the customer the
    hub's default quota back."""

    name: Name | None = Field(None, description="must not be null")
    contact_name: ContactName | None = None
    contact_email: ContactEmail | None = None
    storage_quota_bytes: int | None = Field(
        None, ge=0, le=MAX_BIGINT,
        description="bytes; null: the default (REMOTEGPU_TENANT_QUOTA_BYTES)")


class CustomerDetail(CustomerItem):
    users: list[UserItem]
    storage_quota_bytes: int = Field(description="bytes its datasets may hold")
    storage_used_bytes: int = Field(description="bytes of its datasets uploading, "
                                                "processing or ready")


class CustomerQuery(PageQuery):
    keyword: str | None = Field(None, max_length=128, description="part of name or contact")
    status: Literal["active", "disabled"] | None = None


class CustomerPath(PathParams):
    id: NumericId


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


@routes.get("/api/v1/admin/customers/{id}", access="customer:read", path_params=CustomerPath,
            summary="A customer, its users and its storage", response=CustomerDetail)
async def get_customer(request: web.Request) -> CustomerDetail:
    return CustomerDetail.model_validate(await request.app[CUSTOMERS].detail(
        _tenant_id(request)))


@routes.patch("/api/v1/admin/customers/{id}", access="customer:manage",
              path_params=CustomerPath, summary="Change a customer's details",
              body=CustomerPatch, response=CustomerDetail, errors=(ErrorCode.DUPLICATE,),
              description="Only the fields sent change. A taken name is 409/40902.")
async def update_customer(request: web.Request, body: CustomerPatch) -> CustomerDetail:
    customers = request.app[CUSTOMERS]
    tenant_id = _tenant_id(request)
    await customers.update(tenant_id, body.model_dump(exclude_unset=True))
    return CustomerDetail.model_validate(await customers.detail(tenant_id))


@routes.post("/api/v1/admin/customers/{id}/disable", access="customer:manage",
             path_params=CustomerPath,
             summary="Disable a customer", response=CustomerItem,
             errors=(ErrorCode.NOT_FOUND,),
             description="Its users' logins end at once: refresh tokens are revoked and "
                         "access tokens fail with 40302 from the next request.")
async def disable_customer(request: web.Request) -> CustomerItem:
    return await _set_enabled(request, False)


@routes.post("/api/v1/admin/customers/{id}/enable", access="customer:manage",
             path_params=CustomerPath,
             summary="Enable a customer again", response=CustomerItem,
             errors=(ErrorCode.NOT_FOUND,))
async def enable_customer(request: web.Request) -> CustomerItem:
    return await _set_enabled(request, True)


async def _set_enabled(request: web.Request, enabled: bool) -> CustomerItem:
    customers = request.app[CUSTOMERS]
    tenant_id = _tenant_id(request)
    await customers.set_enabled(tenant_id, enabled)
    return CustomerItem.model_validate(dict(await customers.get(tenant_id)))
