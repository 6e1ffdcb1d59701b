"""``/api/v1/customer/machines``: a customer's own machines (CONTRACT.md §4)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from api.items import JobRef
from api.keys import PRINCIPAL, STATE, TELEMETRY, TENANT_MACHINES
from api.models import Body, MachinePath
from api.monitoring import Trend, TrendQueryOwn
from api.routing import Routes
from services.errors import ErrorCode
from services.ids import JOB, format_id

routes = Routes("customer")

PUBLIC_KEY = (r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
              r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]{0,256})?$")


class CustomerMachine(BaseModel):
    id: str
    name: str
    status: str
    gpu_util: float | None = Field(None, description="null until the agent reports")
    gpu_model: str
    gpu_count: int
    ssh_host: str
    ssh_port: int
    ssh_user: str
    jupyter_url: str | None
    expires_at: AwareDatetime
    last_heartbeat_at: AwareDatetime | None = Field(
        description="when the hub last received a frame of the machine's agent; null if never")


class Connection(BaseModel):
    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_command: str = Field(examples=["ssh -p 10022 root@ssh.example.com"])
    jupyter_url: str | None


class SshResetIn(Body):
    public_key: Annotated[str, StringConstraints(strip_whitespace=True, max_length=16384,
                                                 pattern=PUBLIC_KEY)] | None = Field(
        None, description="an OpenSSH public key to install; omitted: keys are regenerated")


@routes.get("/api/v1/customer/machines", access="tenant:machine:read",
            summary="My machines", response=list[CustomerMachine],
            description="Machines leased to the caller's tenant, by id.")
async def my_machines(request: web.Request) -> list[CustomerMachine]:
    rows = await request.app[TENANT_MACHINES].list(request[PRINCIPAL].tenant_id)
    state = request.app[STATE]
    return [CustomerMachine.model_validate({
        **dict(r), "gpu_util": state.gpu_util(r["id"]),
        "last_heartbeat_at": state.last_heard(r["id"], r["last_heartbeat_at"])}) for r in rows]


@routes.get("/api/v1/customer/machines/{id}/connection", access="tenant:machine:read",
            path_params=MachinePath,
            summary="How to reach one of my machines", response=Connection,
            errors=(ErrorCode.NOT_FOUND,))
async def connection(request: web.Request) -> Connection:
    row = await request.app[TENANT_MACHINES].get(request[PRINCIPAL].tenant_id,
                                                 request.match_info["id"])
    return Connection(ssh_host=row["ssh_host"], ssh_port=row["ssh_port"],
                      ssh_user=row["ssh_user"], jupyter_url=row["jupyter_url"],
                      ssh_command=f"ssh -p {row['ssh_port']} {row['ssh_user']}@{row['ssh_host']}")


@routes.post("/api/v1/customer/machines/{id}/ssh-reset", access="tenant:machine:operate",
             path_params=MachinePath,
             summary="Reset SSH access to one of my machines", body=SshResetIn,
             response=JobRef, errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="Creates an `ssh_reset` job for the machine's agent.")
async def ssh_reset(request: web.Request, body: SshResetIn) -> JobRef:
    principal = request[PRINCIPAL]
    job_id = await request.app[TENANT_MACHINES].reset_ssh(
        principal.tenant_id, request.match_info["id"], body.public_key, principal.user_id)
    return JobRef(job_id=format_id(JOB, job_id))


@routes.get("/api/v1/customer/machines/{id}/metrics", access="tenant:machine:read",
            path_params=MachinePath,
            summary="GPU utilisation of one of my machines over time", query=TrendQueryOwn,
            response=Trend, errors=(ErrorCode.NOT_FOUND,),
            description="Same shape as the admin gpu-trend; only data since the lease began.")
async def my_machine_metrics(request: web.Request, query: TrendQueryOwn) -> Trend:
    row = await request.app[TENANT_MACHINES].get(request[PRINCIPAL].tenant_id,
                                                 request.match_info["id"])
    interval, points = await request.app[TELEMETRY].trend(
        query.range, machine_id=row["id"], not_before=row["lease_start"])
    return Trend.model_validate({"interval": interval, "points": points})
