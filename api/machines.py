"""``/api/v1/admin/machines``: the fleet as admins manage it (CONTRACT.md §3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from aiohttp.http import HttpProcessingError
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from api.items import AllocationItem
from api.keys import ALLOCATIONS, IMPORTS, MACHINES, PRINCIPAL, STATE
from api.models import Body, LeaseStart, MachinePath, Page, PageQuery, Query, TenantId
from api.routing import Routes
from hub.state import LatestState
from services import imports
from services.errors import ErrorCode, Malformed, ServiceError
from services.ids import ALLOCATION, JOB, format_id
from services.machines import MachinePatch, MachineSpec
from storage.machines import MachineFilter

routes = Routes("machines")

class MachineQuery(PageQuery):
    gpu_model: str | None = Field(None, max_length=128,
                                  description="exact or substring, case-insensitive")
    status: Literal["online", "offline"] | None = None
    allocation_status: Literal["idle", "allocated", "maintenance"] | None = None
    region: str | None = Field(None, max_length=64)
    tenant_id: TenantId | None = None
    keyword: str | None = Field(None, max_length=128, description="part of id, name or ip")


class GpuInfo(BaseModel):
    model: str
    count: int
    memory: str = Field(examples=["24GB"], description="memory per GPU")


class MachineItem(BaseModel):
    id: str
    name: str
    region: str
    status: Literal["online", "offline"]
    allocation_status: Literal["idle", "allocated", "maintenance"]
    ip: str
    gpu_info: GpuInfo
    cpu_info: str
    memory_total: int = Field(description="GB")
    disk_total: int = Field(description="GB")
    tenant_id: int | None
    tenant_name: str | None
    expires_at: AwareDatetime | None
    last_heartbeat_at: AwareDatetime | None = Field(
        description="when the hub last received a frame of the machine's agent; null if never")
    gpu_util: float | None = Field(None, description="mean utilisation of the GPUs, percent; "
                                                     "null until the agent reports")
    ssh_host: str
    ssh_port: int
    ssh_user: str
    jupyter_url: str | None
    labels: dict[str, str]
    maintenance_reason: str | None
    created_at: AwareDatetime

    @classmethod
    def from_row(cls, row: Any, **extra: Any) -> MachineItem:
        values = dict(row)
        values["gpu_info"] = GpuInfo(model=row["gpu_model"], count=row["gpu_count"],
                                     memory=f"{row['gpu_memory_gb']}GB")
        return cls.model_validate({**values, **extra})


class MachineCreated(MachineItem):
    agent_token: str = Field(description="shown only in this response; store it on the machine")


class GpuDevice(BaseModel):
    index: int
    uuid: str | None
    model: str
    memory_total_mib: int | None


class LatestGpu(BaseModel):
    index: int
    util: float
    mem_used: float = Field(description="MiB")
    mem_total: float = Field(description="MiB")
    temp: float
    power: float


class LatestMetrics(BaseModel):
    ts: float = Field(description="sample time, epoch seconds")
    cpu_util: float
    mem_used: float = Field(description="GB")
    mem_total: float = Field(description="GB")
    disk_used: float = Field(description="GB")
    disk_total: float = Field(description="GB")
    gpus: list[LatestGpu]


class MachineDetail(MachineItem):
    gpus: list[GpuDevice]
    allocation: AllocationItem | None
    latest: LatestMetrics | None = Field(None, description="null until the agent reports")


class MaintenanceIn(Body):
    enabled: bool
    reason: str | None = Field(None, max_length=512)


class AgentToken(BaseModel):
    machine_id: str
    agent_token: str


class ImportQuery(Query):
    dry_run: bool = False


class ImportedMachine(BaseModel):
    id: str
    agent_token: str


class ImportResult(BaseModel):
    rows: int
    created: int
    dry_run: bool
    machines: list[ImportedMachine] = Field(description="agent tokens, shown only here")


class TemplateQuery(Query):
    format: Literal["xlsx", "csv"] = "xlsx"


class AllocateIn(Body):
    tenant_id: TenantId
    duration_months: int = Field(ge=1, le=36)
    start_time: LeaseStart | None = Field(
        None, description="default now; within 10 years of now, past (back-dating) or future")
    remark: str | None = Field(None, max_length=1024)


class AllocationRef(BaseModel):
    allocation_id: str


class ReclaimIn(Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                             max_length=512)]
    force: bool = False


class ReclaimOut(BaseModel):
    task_id: str = Field(description="the reclaim job (see GET /api/v1/jobs/{id}); the "
                                     "seed's name for it")
    job_id: str = Field(description="the same job id as `task_id`")
    allocation_id: str


def _machine_id(request: web.Request) -> str:
    return request.match_info["id"]


def _live(state: LatestState, row: Any) -> dict[str, Any]:
    """What the latest sample adds to a stored machine: its GPU utilisation, and when the
    hub received it (a stored last_heartbeat_at lags by up to a monitor interval)."""
    return {"gpu_util": state.gpu_util(row["id"]),
            "last_heartbeat_at": state.last_heard(row["id"], row["last_heartbeat_at"])}


@routes.get("/api/v1/admin/machines", access="machine:read", summary="List machines",
            query=MachineQuery, response=Page[MachineItem],
            description="Sorted by id. Filters combine with AND.")
async def list_machines(request: web.Request, query: MachineQuery) -> Page[MachineItem]:
    flt = MachineFilter(gpu_model=query.gpu_model, status=query.status,
                        allocation_status=query.allocation_status, region=query.region,
                        tenant_id=query.tenant_id, keyword=query.keyword)
    rows, total = await request.app[MACHINES].page(flt, limit=query.page_size,
                                                   offset=query.offset)
    state = request.app[STATE]
    return Page[MachineItem](list=[MachineItem.from_row(r, **_live(state, r)) for r in rows],
                             total=total, page=query.page, page_size=query.page_size)


@routes.post("/api/v1/admin/machines", access="machine:write", summary="Register a machine",
             body=MachineSpec, response=MachineCreated, errors=(ErrorCode.DUPLICATE,),
             description="Returns the agent token once; only its hash is stored.")
async def create_machine(request: web.Request, body: MachineSpec) -> MachineCreated:
    [registered] = await request.app[MACHINES].register([body])
    row = await request.app[MACHINES].get(registered.machine_id)
    return MachineCreated.from_row(row, agent_token=registered.agent_token)


@routes.get("/api/v1/admin/machines/{id}", access="machine:read", summary="Machine detail",
            path_params=MachinePath,
            response=MachineDetail, errors=(ErrorCode.NOT_FOUND,))
async def get_machine(request: web.Request) -> MachineDetail:
    detail = await request.app[MACHINES].detail(_machine_id(request))
    allocation = None
    if detail.machine["allocation_id"] is not None:
        allocation = AllocationItem.from_row(
            await request.app[ALLOCATIONS].get(detail.machine["allocation_id"]))
    sample = request.app[STATE].samples.get(detail.machine["id"])
    latest = None
    if sample is not None:
        latest = {key: getattr(sample, key) for key in (
            "ts", "cpu_util", "mem_used", "mem_total", "disk_used", "disk_total")}
        latest["gpus"] = [{k: g[k] for k in ("index", "util", "mem_used", "mem_total", "temp",
                                              "power")} for g in sample.gpus]
    return MachineDetail.from_row(detail.machine, gpus=[dict(g) for g in detail.gpus],
                                  allocation=allocation, latest=latest,
                                  **_live(request.app[STATE], detail.machine))


@routes.patch("/api/v1/admin/machines/{id}", access="machine:write",
              path_params=MachinePath,
              summary="Change a machine's descriptive fields", body=MachinePatch,
              response=MachineItem, errors=(ErrorCode.NOT_FOUND,),
              description="`status` and `allocation_status` cannot be changed here (400).")
async def patch_machine(request: web.Request, body: MachinePatch) -> MachineItem:
    row = await request.app[MACHINES].patch(_machine_id(request), body)
    return MachineItem.from_row(row, **_live(request.app[STATE], row))


@routes.delete("/api/v1/admin/machines/{id}", access="machine:write",
               path_params=MachinePath,
               summary="Delete an idle machine", response=None,
               errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT))
async def delete_machine(request: web.Request) -> None:
    await request.app[MACHINES].delete(_machine_id(request))


@routes.post("/api/v1/admin/machines/{id}/maintenance", access="machine:write",
             path_params=MachinePath,
             summary="Put an idle machine in maintenance, or take it out", body=MaintenanceIn,
             response=MachineItem, errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="Only a machine with no open lease and no reclaim in flight.")
async def set_maintenance(request: web.Request, body: MaintenanceIn) -> MachineItem:
    machines = request.app[MACHINES]
    await machines.set_maintenance(_machine_id(request), body.enabled, body.reason)
    row = await machines.get(_machine_id(request))
    return MachineItem.from_row(row, **_live(request.app[STATE], row))


@routes.post("/api/v1/admin/machines/{id}/agent-token", access="machine:write",
             path_params=MachinePath,
             summary="Rotate the agent token", response=AgentToken,
             errors=(ErrorCode.NOT_FOUND,),
             description="The old token stops working at once; the new one is shown once.")
async def rotate_agent_token(request: web.Request) -> AgentToken:
    token = await request.app[MACHINES].rotate_agent_token(_machine_id(request))
    return AgentToken(machine_id=_machine_id(request), agent_token=token)


@routes.post("/api/v1/admin/machines/import", access="machine:write",
             summary="Import machines from .xlsx or .csv", query=ImportQuery,
             upload="file", response=ImportResult,
             errors=(ErrorCode.VALIDATION, ErrorCode.MALFORMED, ErrorCode.TOO_LARGE),
             description="multipart/form-data with a `file` part; columns are the create "
                         "fields. All rows valid: all created in one transaction; otherwise "
                         "nothing is created and `data.errors` lists `{row, field, message}` "
                         f"(header = row 1). At most {imports.MAX_BYTES // 2**20} MiB "
                         f"({imports.MAX_XLSX_EXPANDED_BYTES // 2**20} MiB once an .xlsx is "
                         f"decompressed) and {imports.MAX_ROWS} rows; columns after the "
                         f"{imports.MAX_COLUMNS}th are not read.")
async def import_machines(request: web.Request, query: ImportQuery) -> ImportResult:
    data, kind = await _read_upload(request)
    result = await request.app[IMPORTS].run(data, kind, dry_run=query.dry_run)
    return ImportResult(rows=result.rows, created=result.created, dry_run=result.dry_run,
                        machines=[ImportedMachine(id=m.machine_id, agent_token=m.agent_token)
                                  for m in result.machines])


# What aiohttp's multipart reader raises on a body that is not the multipart it claims to
# be: ValueError (no boundary, one too long, not found, a part cut short, an undecodable
# `_charset_` part), RuntimeError (a `_charset_` part too long), HttpProcessingError (part
# headers malformed, too long or too many).
_MALFORMED_MULTIPART = (ValueError, RuntimeError, HttpProcessingError)


async def _read_upload(request: web.Request) -> tuple[bytes, str]:
    if request.content_type != "multipart/form-data":
        raise Malformed("expected multipart/form-data with a `file` part")
    try:
        return await _file_part(request)
    except _MALFORMED_MULTIPART:
        raise Malformed("malformed multipart/form-data body") from None


async def _file_part(request: web.Request) -> tuple[bytes, str]:
    reader = await request.multipart()
    async for part in reader:
        if part.name != "file":
            continue
        filename = (part.filename or "").lower()
        if filename.endswith(".xlsx"):
            kind = imports.XLSX
        elif filename.endswith(".csv"):
            kind = imports.CSV
        else:
            raise Malformed("the file must be .xlsx or .csv")
        chunks, size = [], 0
        while chunk := await part.read_chunk(256 * 1024):
            size += len(chunk)
            if size > imports.MAX_BYTES:
                raise ServiceError(f"file larger than {imports.MAX_BYTES // 2**20} MiB",
                                   code=ErrorCode.TOO_LARGE)
            chunks.append(chunk)
        return b"".join(chunks), kind
    raise Malformed("no `file` part in the upload")


@routes.get("/api/v1/admin/machines/import/template", access="machine:write",
            summary="A sample import file", query=TemplateQuery,
            raw_content_type="application/octet-stream")
async def import_template(request: web.Request, query: TemplateQuery) -> web.Response:
    content_type = ("text/csv" if query.format == "csv" else
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    return web.Response(
        body=imports.template(query.format), content_type=content_type,
        headers={"Content-Disposition":
                 f'attachment; filename="machines-import-template.{query.format}"'},
    )


@routes.post("/api/v1/admin/machines/{id}/allocate", access="allocation:write",
             path_params=MachinePath,
             summary="Lease one idle machine to a tenant", body=AllocateIn,
             response=AllocationRef,
             errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="409 with `data.machines = [{id, reason}]` when the machine is not "
                         "idle, or when the tenant is disabled.")
async def allocate_machine(request: web.Request, body: AllocateIn) -> AllocationRef:
    [allocation_id] = await request.app[ALLOCATIONS].allocate(
        [_machine_id(request)], tenant_id=body.tenant_id, months=body.duration_months,
        start_time=body.start_time, remark=body.remark,
        actor=request[PRINCIPAL].user_id,
    )
    return AllocationRef(allocation_id=format_id(ALLOCATION, allocation_id))


@routes.post("/api/v1/admin/machines/{id}/reclaim", access="allocation:write",
             path_params=MachinePath,
             summary="Reclaim a leased machine", body=ReclaimIn, response=ReclaimOut,
             message="Reclaim process started",
             errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="The machine goes to maintenance and a `reclaim` job asks its agent "
                         "to wipe it; the lease closes when the job succeeds. `force` closes "
                         "the lease at once (also one whose reclaim waits on a silent agent), "
                         "cancels the pending job and stops the tenant's tasks. Reclaiming "
                         "an idle machine is 409.")
async def reclaim_machine(request: web.Request, body: ReclaimIn) -> ReclaimOut:
    reclaim = await request.app[ALLOCATIONS].reclaim(
        _machine_id(request), reason=body.reason, force=body.force,
        actor=request[PRINCIPAL].user_id,
    )
    job_id = format_id(JOB, reclaim.job_id)
    return ReclaimOut(task_id=job_id, job_id=job_id,
                      allocation_id=format_id(ALLOCATION, reclaim.allocation_id))

