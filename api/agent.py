"""Agent endpoints (CONTRACT.md §6), authenticated by the machine's agent token. Agent
traffic is telemetry, not operator action: it is not audited."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from api.items import JobItem
from api.keys import AGENT_IDENTITY, AGENT_SOCKETS, DISPATCHER, INGEST, JOBS
from api.models import PathParams, prefixed_id
from api.routing import AGENT, Routes
from services.errors import ErrorCode
from services.frames import JobUpdate, MetricsFrame, check_frame
from services.ids import JOB, parse_id

routes = Routes("agent")


class Command(BaseModel):
    job_id: str
    action: str = Field(description="the job kind: reclaim, ssh_reset, mount_dataset, "
                                    "task_start, task_stop")
    params: dict[str, Any]


class HeartbeatReply(BaseModel):
    commands: list[Command] = Field(description="jobs for this machine, each sent once")


class AgentJobPath(PathParams):
    job_id: prefixed_id(JOB)  # type: ignore[valid-type]


@routes.post("/api/v1/agent/heartbeat", access=AGENT, audited=False,
             summary="Report metrics; receive pending commands", body=MetricsFrame,
             response=HeartbeatReply,
             errors=(ErrorCode.UNAVAILABLE,),
             description="Every 5-10 s. `ts` must lie within the last 24 h and at most 5 min "
                         "ahead; GPU indexes must exist on the machine. A rejected frame is "
                         "never stored. 503 with `Retry-After` while the hub's write queue is "
                         "full or it shuts down: keep the frame and send it again then.")
async def heartbeat(request: web.Request, body: MetricsFrame) -> HeartbeatReply:
    agent = request[AGENT_IDENTITY]
    ingest = request.app[INGEST]
    ingest.admit(agent.machine_id)
    received = time.time()
    check_frame(body, now=received, gpu_count=agent.gpu_count)
    ingest.accept(agent.machine_id, body.as_frame(), received)
    commands = await request.app[DISPATCHER].commands_for(agent.machine_id)
    return HeartbeatReply(commands=[Command(**c) for c in commands])


@routes.post("/api/v1/agent/jobs/{job_id}", access=AGENT, audited=False,
             path_params=AgentJobPath,
             summary="Report progress on a job", body=JobUpdate, response=JobItem,
             errors=(ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
             description="sent -> running -> succeeded | failed. Repeating the final status "
                         "is harmless; only jobs of the token's own machine are visible.")
async def job_update(request: web.Request, body: JobUpdate) -> JobItem:
    job_id = parse_id(JOB, request.match_info["job_id"], "job")
    job = await request.app[JOBS].agent_update(
        request[AGENT_IDENTITY].machine_id, job_id, body.status, result=body.result,
        error=body.error)
    return JobItem.from_row(job)


@routes.get("/ws/agent", access=AGENT, audited=False,
            summary="The streaming agent protocol (WebSocket)",
            raw_content_type="websocket",
            description="Send `hello`, then `metrics` frames and `job_update` messages; "
                        "receive `command` messages. A bad token is 401 before the upgrade.")
async def agent_socket(request: web.Request) -> web.WebSocketResponse:
    return await request.app[AGENT_SOCKETS].serve(request, request[AGENT_IDENTITY])
