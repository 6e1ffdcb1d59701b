"""The agent protocol (CONTRACT.md §6): authentication, strict frames over HTTP and
WebSocket, and jobs delivered to agents."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import WSMsgType

from api.keys import AUDIT, INGEST, REDIS, REDIS_KEYS
from tests.agent_frames import BAD_FRAMES, bad_frames, frame, gpu
from tests.helpers import Api, call

HEARTBEAT = "/api/v1/agent/heartbeat"


@pytest.fixture
async def machine(admin):
    return await admin.machine("m1", gpu_count=2)


@pytest.fixture
def agent_token(machine):
    return machine["agent_token"]


async def _stored(db):
    return (await db.fetchval("SELECT count(*) FROM gpu_metrics"),
            await db.fetchval("SELECT count(*) FROM machine_metrics"))


async def test_http_heartbeat_lands_in_redis_and_postgres(client, agent_token, db):
    sent = frame()
    status, body = await call(client, "POST", HEARTBEAT, token=agent_token, json=sent)
    assert (status, body["data"]) == (200, {"commands": []})
    await client.app[INGEST].flush()
    rows = await db.fetch("SELECT * FROM gpu_metrics ORDER BY gpu_index")
    assert [(r["machine_id"], r["gpu_index"], r["util"]) for r in rows] == [("m1", 0, 80.0),
                                                                           ("m1", 1, 81.0)]
    assert abs(rows[0]["time"].timestamp() - sent["ts"]) < 1e-3
    machine_row = await db.fetchrow("SELECT * FROM machine_metrics")
    assert (machine_row["cpu_util"], machine_row["disk_total"]) == (40.0, 2048)
    redis, keys = client.app[REDIS], client.app[REDIS_KEYS]
    assert await redis.zscore(keys.last_seen(), "m1") is not None
    assert float(await redis.get(keys.heartbeat("m1"))) == pytest.approx(time.time(), abs=5)
    latest = orjson.loads(await redis.hget(keys.latest(), "m1"))
    assert (latest["gpu_util"], latest["gpu_mem"]) == (80.5, 24576)


async def test_websocket_frames_land_in_redis_and_postgres(client, agent_token, db):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        await ws.send_str(orjson.dumps({"type": "metrics", **frame()}).decode())
        await ws.send_str(orjson.dumps({"type": "metrics", **frame(ts=time.time() + 1)}
                                       ).decode())
        await _until(lambda: client.app[INGEST].frames >= 2)
    await client.app[INGEST].flush()
    assert await _stored(db) == (4, 2)
    assert await client.app[REDIS].hexists(client.app[REDIS_KEYS].latest(), "m1")


async def test_hello_refines_the_gpu_inventory(client, agent_token, db):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        await ws.send_str(orjson.dumps({
            "type": "hello", "machine_id": "m1", "agent_version": "1.2.3",
            "gpus": [{"index": 0, "uuid": "GPU-aaaa", "model": "NVIDIA H100 80GB HBM3",
                      "memory_total": 81559},
                     {"index": 1, "uuid": "GPU-bbbb", "model": "NVIDIA H100 80GB HBM3",
                      "memory_total": 81559}],
        }).decode())
        await _until_db(db, "SELECT count(*) = 2 FROM gpu_devices WHERE uuid IS NOT NULL")
    rows = await db.fetch("SELECT gpu_index, uuid, model, memory_total_mib FROM gpu_devices "
                          "ORDER BY gpu_index")
    assert [tuple(r) for r in rows] == [(0, "GPU-aaaa", "NVIDIA H100 80GB HBM3", 81559),
                                        (1, "GPU-bbbb", "NVIDIA H100 80GB HBM3", 81559)]


async def test_hello_for_another_machine_is_refused(client, admin, agent_token, db):
    await admin.machine("m2")
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        await ws.send_str(orjson.dumps({"type": "hello", "machine_id": "m2", "gpus": [
            {"index": 0, "uuid": "GPU-x", "model": "x", "memory_total": 1}]}).decode())
        reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "error" and reply["data"]["code"] == "wrong_machine"
    assert await db.fetchval("SELECT count(*) FROM gpu_devices WHERE uuid IS NOT NULL") == 0


@pytest.mark.parametrize("case", BAD_FRAMES)
async def test_bad_frame_over_http_is_40001_and_never_stored(client, agent_token, db, case):
    status, body = await call(client, "POST", HEARTBEAT, token=agent_token,
                              json=bad_frames()[case])
    assert (status, body["code"]) == (400, 40001), body
    assert body["data"]["errors"], body
    await client.app[INGEST].flush()
    assert await _stored(db) == (0, 0)
    assert not await client.app[REDIS].hexists(client.app[REDIS_KEYS].latest(), "m1")


async def test_malformed_json_heartbeat_is_40002(client, agent_token):
    resp = await client.post(HEARTBEAT, data=b"{not json",
                             headers={"Authorization": f"Bearer {agent_token}",
                                      "Content-Type": "application/json"})
    assert (resp.status, (await resp.json())["code"]) == (400, 40002)


async def test_unknown_gpu_index_names_the_field(client, agent_token):
    _, body = await call(client, "POST", HEARTBEAT, token=agent_token,
                         json=frame(gpus=[gpu(index=0), gpu(index=7)]))
    assert body["data"]["errors"] == [
        {"field": "gpus[1].index", "message": "unknown GPU index: the machine has 2 GPUs"}]


@pytest.mark.parametrize("case", ["util above 100", "unknown gpu index", "ts ten minutes ahead",
                                  "gpu index as a float", "more gpus than the machine has"])
async def test_bad_frame_on_the_socket_gets_an_error_and_the_socket_stays_open(
        client, agent_token, db, case):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        await ws.send_str(orjson.dumps({"type": "metrics", **bad_frames()[case]}).decode())
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error" and reply["data"]["code"] == "invalid_metrics"
        assert reply["data"]["errors"]
        await ws.send_str(orjson.dumps({"type": "metrics", **frame()}).decode())
        await _until(lambda: client.app[INGEST].frames == 1)
        assert not ws.closed
    await client.app[INGEST].flush()
    assert await _stored(db) == (2, 1)


@pytest.mark.parametrize("message", ["not json", '["a list"]', '{"type": "dance"}',
                                     '{"no": "type"}'])
async def test_unknown_socket_messages_get_an_error(client, agent_token, message):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        await ws.send_str(message)
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error"
        assert not ws.closed


def _raw_metrics(field: str, literal: str, *, in_gpu: bool = False) -> str:
    """A metrics message whose ``field`` (of the frame, or of its first GPU) holds
    ``literal`` as written: NaN or 1e400, which no encoder of ours writes."""
    body = {"type": "metrics", **frame()}
    (body["gpus"][0] if in_gpu else body)[field] = "@value@"
    return orjson.dumps(body).decode().replace('"@value@"', literal)


@pytest.mark.parametrize(("field", "literal", "in_gpu"), [
    ("ts", "NaN", False), ("cpu_util", "Infinity", False), ("temp", "-Infinity", True),
    ("mem_used", "1e400", False), ("ecc_dbe", str(2**64 - 1), True),
    ("ecc_dbe", str(10**30), True),
])
async def test_non_finite_or_huge_numbers_on_the_socket_get_an_error_and_are_never_stored(
        client, agent_token, db, field, literal, in_gpu):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        await ws.send_str(_raw_metrics(field, literal, in_gpu=in_gpu))
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error", reply
        await ws.send_str(orjson.dumps({"type": "metrics", **frame()}).decode())
        await _until(lambda: client.app[INGEST].frames == 1)
        assert not ws.closed
    await client.app[INGEST].flush()
    assert await _stored(db) == (2, 1)


@pytest.mark.parametrize("message", [
    {"type": "hello", "machine_id": "m1", "gpus": [
        {"index": 0, "uuid": "GPU-a", "model": "x", "memory_total": 1},
        {"index": 0, "uuid": "GPU-b", "model": "x", "memory_total": 1}]},
    {"type": "hello", "machine_id": "m1", "gpus": [
        {"index": 0, "uuid": "GPU-\u0000", "model": "x", "memory_total": 1}]},
])
async def test_a_hello_that_cannot_be_stored_gets_an_error_and_the_socket_stays_open(
        client, agent_token, db, message):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        await ws.send_str(orjson.dumps(message).decode())
        reply = await ws.receive_json(timeout=5)
        assert (reply["type"], reply["data"]["code"]) == ("error", "invalid_hello"), reply
        assert not ws.closed
    assert await db.fetchval("SELECT count(*) FROM gpu_devices WHERE uuid IS NOT NULL") == 0


async def test_a_flood_of_bad_messages_closes_the_socket_with_4010(client, agent_token):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        for _ in range(25):
            await ws.send_str("nonsense")
        while (message := await ws.receive(timeout=5)).type == WSMsgType.TEXT:
            pass
        assert message.type == WSMsgType.CLOSE and ws.close_code == 4010


async def test_a_second_socket_for_the_machine_replaces_the_first(client, agent_token):
    headers = {"Authorization": f"Bearer {agent_token}"}
    async with (client.ws_connect("/ws/agent", headers=headers) as first,
                client.ws_connect("/ws/agent", headers=headers)):
        message = await first.receive(timeout=5)
        assert message.type == WSMsgType.CLOSE and first.close_code == 4000


@pytest.mark.parametrize("token", ["", "made-up-token"])
async def test_bad_agent_token_is_401_before_the_upgrade(client, machine, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.get("/ws/agent", headers=headers)
    body = await resp.json()
    assert (resp.status, body["code"]) == (401, 40101)
    status, body = await call(client, "POST", HEARTBEAT, token=token or None, json=frame())
    assert (status, body["code"]) == (401, 40101)


async def test_a_user_token_is_refused_on_agent_endpoints(client, admin, machine):
    status, body = await call(client, "POST", HEARTBEAT, token=admin.token, json=frame())
    assert (status, body["code"]) == (401, 40101)
    resp = await client.get("/ws/agent", headers={"Authorization": f"Bearer {admin.token}"})
    assert resp.status == 401


async def test_an_agent_token_is_refused_on_user_endpoints(client, agent_token):
    for path in ("/api/v1/auth/profile", "/api/v1/admin/machines", "/api/v1/customer/machines"):
        status, body = await call(client, "GET", path, token=agent_token)
        assert (status, body["code"]) == (401, 40101), path


async def test_agent_traffic_is_not_audited(client, agent_token, db):
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame(cpu_util=500))
    await client.app[AUDIT].flush()
    assert await db.fetchval("SELECT count(*) FROM audit_logs WHERE path LIKE '/api/v1/agent%'"
                             ) == 0


async def test_a_rotated_token_stops_working_at_once(client, admin, agent_token):
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())  # now cached
    fresh = (await admin.ok("POST", "/api/v1/admin/machines/m1/agent-token"))["agent_token"]
    status, _ = await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    assert status == 401
    status, _ = await call(client, "POST", HEARTBEAT, token=fresh, json=frame())
    assert status == 200


async def test_rotating_the_token_closes_the_agent_socket(client, admin, agent_token):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        await admin.ok("POST", "/api/v1/admin/machines/m1/agent-token")
        message = await ws.receive(timeout=5)
        assert message.type == WSMsgType.CLOSE and ws.close_code == 4001


async def test_first_heartbeat_brings_the_machine_online(client, admin, agent_token, db):
    assert await db.fetchval("SELECT status FROM machines WHERE id = 'm1'") == "offline"
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    await client.app[INGEST].flush()
    assert await db.fetchval("SELECT status FROM machines WHERE id = 'm1'") == "online"
    item = (await admin.ok("GET", "/api/v1/admin/machines"))["list"][0]
    assert (item["status"], item["gpu_util"]) == ("online", 80.5)
    detail = await admin.ok("GET", "/api/v1/admin/machines/m1")
    assert detail["latest"]["gpus"][1] == {"index": 1, "util": 81.0, "mem_used": 12288,
                                           "mem_total": 24576, "temp": 66.0, "power": 310.5}
    assert detail["latest"]["cpu_util"] == 40.0


async def test_dashboard_average_is_over_online_machines(client, admin, db):
    tokens = [(await admin.machine(f"m{i}", gpu_count=2))["agent_token"] for i in range(3)]
    for i, token in enumerate(tokens):
        await call(client, "POST", HEARTBEAT, token=token,
                   json=frame(gpus=[gpu(index=0, util=10.0 * (i + 1)),
                                    gpu(index=1, util=10.0 * (i + 1))]))
    await client.app[INGEST].flush()
    assert (await admin.ok("GET", "/api/v1/admin/dashboard/stats"))[
        "avg_gpu_utilization"] == 20.0


async def test_realtime_lists_every_reporting_machine_from_redis(client, admin, agent_token):
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    await client.app[INGEST].flush()
    data = await admin.ok("GET", "/api/v1/admin/monitoring/realtime")
    [entry] = data["machines"]
    assert (entry["machine_id"], entry["status"], entry["gpu_util"], entry["gpu_mem"],
            entry["cpu_util"]) == ("m1", "online", 80.5, 24576, 40.0)
    assert [g["index"] for g in entry["gpus"]] == [0, 1]


# --- jobs to agents -------------------------------------------------------------------------

@pytest.fixture
async def leased(admin, accounts, machine):
    tenant = await accounts.tenant("Acme")
    await admin.allocate("m1", tenant)
    return tenant


async def _reclaim(admin) -> str:
    return (await admin.ok("POST", "/api/v1/admin/machines/m1/reclaim",
                           {"reason": "overdue"}))["task_id"]


async def test_heartbeat_reply_carries_a_pending_job_exactly_once(client, admin, leased,
                                                                  agent_token):
    job_id = await _reclaim(admin)
    allocation_id = (await admin.ok("GET", "/api/v1/admin/allocations"))["list"][0]["id"]
    _, body = await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    assert body["data"]["commands"] == [{"job_id": job_id, "action": "reclaim",
                                         "params": {"allocation_id": allocation_id,
                                                    "reason": "overdue"}}]
    _, body = await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    assert body["data"]["commands"] == []
    job = await admin.ok("GET", f"/api/v1/jobs/{job_id}")
    assert job["status"] == "sent"


async def test_concurrent_heartbeats_claim_a_job_once(client, admin, leased, agent_token):
    await _reclaim(admin)
    results = await asyncio.gather(*[
        call(client, "POST", HEARTBEAT, token=agent_token, json=frame()) for _ in range(10)])
    commands = [c for _, body in results for c in body["data"]["commands"]]
    assert len(commands) == 1


async def test_agent_completes_a_reclaim_over_http(client, admin, leased, agent_token, db):
    job_id = await _reclaim(admin)
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    for status in ("running", "succeeded"):
        code, body = await call(client, "POST", f"/api/v1/agent/jobs/{job_id}",
                                token=agent_token, json={"status": status,
                                                         "result": {"wiped": True}})
        assert (code, body["data"]["status"]) == (200, status)
    assert tuple(await db.fetchrow("SELECT allocation_status, tenant_id FROM machines")) == (
        "idle", None)
    assert await db.fetchval("SELECT status FROM allocations") == "reclaimed"


async def test_repeating_the_final_status_is_harmless(client, admin, leased, agent_token):
    job_id = await _reclaim(admin)
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    path = f"/api/v1/agent/jobs/{job_id}"
    await call(client, "POST", path, token=agent_token, json={"status": "succeeded"})
    status, body = await call(client, "POST", path, token=agent_token,
                              json={"status": "succeeded"})
    assert (status, body["data"]["status"]) == (200, "succeeded")
    status, body = await call(client, "POST", path, token=agent_token, json={"status": "failed"})
    assert (status, body["code"]) == (409, 40901)


async def test_a_job_never_sent_cannot_be_finished_by_the_agent(client, admin, leased,
                                                               agent_token):
    job_id = await _reclaim(admin)
    status, body = await call(client, "POST", f"/api/v1/agent/jobs/{job_id}",
                              token=agent_token, json={"status": "succeeded"})
    assert (status, body["code"]) == (409, 40901)


async def test_an_agent_cannot_touch_another_machines_job(client, admin, leased, agent_token):
    other = (await admin.machine("m2"))["agent_token"]
    job_id = await _reclaim(admin)
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    status, body = await call(client, "POST", f"/api/v1/agent/jobs/{job_id}", token=other,
                              json={"status": "succeeded"})
    assert (status, body["code"]) == (404, 40401)


async def test_job_update_validates_its_body(client, admin, leased, agent_token):
    job_id = await _reclaim(admin)
    status, body = await call(client, "POST", f"/api/v1/agent/jobs/{job_id}",
                              token=agent_token, json={"status": "done"})
    assert (status, body["data"]["errors"][0]["field"]) == (400, "status")


@pytest.mark.parametrize("result", ['{"x": NaN}', '{"x": [1, Infinity]}',
                                    f'{{"x": {10**30}}}', '{"x": "a\\u0000b"}'])
async def test_a_job_result_that_cannot_be_stored_as_sent_is_40001(client, admin, leased,
                                                                   agent_token, result):
    job_id = await _reclaim(admin)
    await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    resp = await client.post(f"/api/v1/agent/jobs/{job_id}",
                             data=f'{{"status": "succeeded", "result": {result}}}',
                             headers={"Authorization": f"Bearer {agent_token}",
                                      "Content-Type": "application/json"})
    body = await resp.json()
    assert (resp.status, body["code"], body["data"]["errors"][0]["field"]) == (
        400, 40001, "result"), body
    assert (await admin.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "sent"


async def test_a_job_result_nested_too_deep_to_store_gets_an_error_on_the_socket(
        client, admin, leased, agent_token):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        job_id = await _reclaim(admin)
        await ws.receive_json(timeout=5)  # the command
        deep = "[" * 300 + "]" * 300  # orjson reads it; it cannot write it back
        await ws.send_str(f'{{"type": "job_update", "job_id": "{job_id}", '
                          f'"status": "succeeded", "result": {{"x": {deep}}}}}')
        reply = await ws.receive_json(timeout=5)
        assert (reply["type"], reply["data"]["code"]) == ("error", "invalid_job_update"), reply
        assert not ws.closed
    assert (await admin.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "sent"


async def test_a_connected_socket_gets_a_queued_job_at_once(client, admin, leased, agent_token,
                                                            db):
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        job_id = await _reclaim(admin)
        command = await ws.receive_json(timeout=5)
        assert (command["type"], command["job_id"], command["action"]) == (
            "command", job_id, "reclaim")
        await ws.send_str(orjson.dumps({"type": "job_update", "job_id": job_id,
                                        "status": "running"}).decode())
        await ws.send_str(orjson.dumps({"type": "job_update", "job_id": job_id,
                                        "status": "succeeded", "result": {"ok": 1}}).decode())
        await _until_db(db, "SELECT status = 'reclaimed' FROM allocations")
    assert (await admin.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "succeeded"


async def test_jobs_queued_while_away_are_pushed_on_connect(client, admin, leased, agent_token):
    job_id = await _reclaim(admin)
    async with client.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {agent_token}"}) as ws:
        command = await ws.receive_json(timeout=5)
    assert command["job_id"] == job_id


async def test_ssh_reset_reaches_the_agent_with_the_public_key(client, admin, leased, accounts,
                                                               agent_token):
    customer = await Api.login(client, await accounts.user("carol", "customer",
                                                           tenant_id=leased))
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm1ZCtest carol@laptop"
    job_id = (await customer.ok("POST", "/api/v1/customer/machines/m1/ssh-reset",
                                {"public_key": key}))["job_id"]
    _, body = await call(client, "POST", HEARTBEAT, token=agent_token, json=frame())
    assert body["data"]["commands"] == [{"job_id": job_id, "action": "ssh_reset",
                                         "params": {"public_key": key}}]


async def _until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _until_db(db, query: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await db.fetchval(query):
        assert time.monotonic() < deadline, f"{query!r} never became true"
        await asyncio.sleep(0.02)
