"""Admin machine management: create, detail, patch, delete, maintenance, agent tokens,
and the list with its filters and paging."""

from __future__ import annotations

import hashlib

import pytest

from tests.helpers import Api, call

MACHINES = "/api/v1/admin/machines"


async def test_create_returns_the_machine_and_its_agent_token_once(admin, db):
    data = await admin.machine("bj-node-01", name="bj-node-01", region="beijing",
                               ip="192.168.1.10", gpu_model="NVIDIA GeForce RTX 4090",
                               gpu_count=4, gpu_memory_gb=24, cpu_info="AMD EPYC 7543",
                               memory_total=256, disk_total=2048, ssh_host="ssh.example.com",
                               ssh_port=10022)
    assert data["id"] == "bj-node-01"
    assert data["gpu_info"] == {"model": "NVIDIA GeForce RTX 4090", "count": 4, "memory": "24GB"}
    assert (data["status"], data["allocation_status"]) == ("offline", "idle")
    assert (data["memory_total"], data["disk_total"], data["ip"]) == (256, 2048, "192.168.1.10")
    assert data["tenant_name"] is None and data["expires_at"] is None
    stored = await db.fetchval("SELECT agent_token_hash FROM machines WHERE id = 'bj-node-01'")
    assert stored == hashlib.sha256(data["agent_token"].encode()).digest()
    _, body = await admin.get(f"{MACHINES}/bj-node-01")
    assert "agent_token" not in body["data"]


async def test_create_makes_one_gpu_device_per_gpu(admin, db):
    await admin.machine("m1", gpu_count=3, gpu_model="H100", gpu_memory_gb=80)
    rows = await db.fetch("SELECT gpu_index, model, memory_total_mib FROM gpu_devices "
                          "WHERE machine_id = 'm1' ORDER BY gpu_index")
    assert [tuple(r) for r in rows] == [(0, "H100", 81920), (1, "H100", 81920),
                                        (2, "H100", 81920)]


async def test_create_without_id_generates_one(admin):
    data = await admin.ok("POST", MACHINES, {"name": "anon", "ip": "10.1.1.1",
                                              "gpu_model": "L4", "gpu_count": 1})
    assert data["id"].startswith("m-") and len(data["id"]) == 14


async def test_create_ssh_host_defaults_to_the_ip(admin):
    data = await admin.machine("m1", ip="10.9.8.7")
    assert (data["ssh_host"], data["ssh_port"], data["ssh_user"]) == ("10.9.8.7", 22, "root")


async def test_create_with_a_taken_id_is_40902(admin):
    await admin.machine("m1")
    status, body = await admin.post(MACHINES, {"id": "m1", "name": "again", "ip": "10.0.0.2",
                                               "gpu_model": "A100", "gpu_count": 1})
    assert (status, body["code"]) == (409, 40902)


async def test_create_validates_every_field(admin):
    status, body = await admin.post(MACHINES, {"id": "bad id!", "ip": "999.1.1.1",
                                               "gpu_model": "A100", "gpu_count": 65,
                                               "ssh_port": 0, "labels": {"k": 1}})
    assert (status, body["code"]) == (400, 40001)
    fields = {e["field"] for e in body["data"]["errors"]}
    assert fields == {"id", "name", "ip", "gpu_count", "ssh_port", "labels.k"}


async def test_create_with_an_unknown_field_is_40001_naming_it(admin, db):
    status, body = await admin.post(MACHINES, {"name": "x", "ip": "10.0.0.1",
                                               "gpu_model": "A100", "gpu_count": 8,
                                               "gpu_mem_gb": 80})
    assert (status, body["code"], body["data"]["errors"]) == (
        400, 40001, [{"field": "gpu_mem_gb", "message": "unknown field"}])
    assert await db.fetchval("SELECT count(*) FROM machines") == 0


async def test_create_rejects_numbers_sent_as_strings(admin):
    status, body = await admin.post(MACHINES, {"name": "x", "ip": "10.0.0.1",
                                               "gpu_model": "A100", "gpu_count": "8"})
    assert (status, [e["field"] for e in body["data"]["errors"]]) == (400, ["gpu_count"])


async def test_detail_has_gpus_and_null_allocation_and_latest(admin):
    await admin.machine("m1", gpu_count=2)
    data = await admin.ok("GET", f"{MACHINES}/m1")
    assert [g["index"] for g in data["gpus"]] == [0, 1]
    assert data["allocation"] is None and data["latest"] is None


async def test_detail_shows_the_current_allocation(admin, accounts):
    tenant = await accounts.tenant("Acme")
    await admin.machine("m1")
    allocation_id = await admin.allocate("m1", tenant, months=3, remark="project A")
    data = await admin.ok("GET", f"{MACHINES}/m1")
    assert data["allocation"]["id"] == allocation_id
    assert (data["allocation"]["tenant_name"], data["allocation"]["remark"]) == ("Acme",
                                                                                 "project A")
    assert (data["tenant_name"], data["allocation_status"]) == ("Acme", "allocated")
    assert data["expires_at"] == data["allocation"]["expires_at"]


async def test_unknown_machine_is_40401(admin):
    status, body = await admin.get(f"{MACHINES}/nope")
    assert (status, body["code"]) == (404, 40401)


async def test_patch_changes_descriptive_fields(admin):
    await admin.machine("m1")
    data = await admin.ok("PATCH", f"{MACHINES}/m1",
                          {"name": "renamed", "region": "shanghai", "labels": {"rack": "B2"},
                           "jupyter_url": "https://j.example.com/m1"})
    assert (data["name"], data["region"], data["labels"]) == ("renamed", "shanghai",
                                                             {"rack": "B2"})
    data = await admin.ok("PATCH", f"{MACHINES}/m1", {"jupyter_url": None})
    assert data["jupyter_url"] is None and data["name"] == "renamed"


@pytest.mark.parametrize("field", ["status", "allocation_status", "id"])
async def test_patch_refuses_state_fields(admin, field):
    await admin.machine("m1")
    status, body = await admin.patch(f"{MACHINES}/m1", {field: "online", "name": "x"})
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == [field]
    assert (await admin.ok("GET", f"{MACHINES}/m1"))["name"] == "m1"


async def test_patch_with_an_unknown_field_is_40001_naming_it(admin):
    await admin.machine("m1")
    status, body = await admin.patch(f"{MACHINES}/m1", {"nmae": "typo"})
    assert (status, body["data"]["errors"]) == (400, [{"field": "nmae",
                                                       "message": "unknown field"}])


async def test_patch_null_on_a_required_field_is_40001(admin):
    await admin.machine("m1")
    status, body = await admin.patch(f"{MACHINES}/m1", {"name": None})
    assert (status, body["data"]["errors"][0]["field"]) == (400, "name")


async def test_patch_gpu_count_resizes_the_devices(admin, db):
    await admin.machine("m1", gpu_count=4)
    await admin.ok("PATCH", f"{MACHINES}/m1", {"gpu_count": 2})
    assert await db.fetchval("SELECT count(*) FROM gpu_devices WHERE machine_id='m1'") == 2
    await admin.ok("PATCH", f"{MACHINES}/m1", {"gpu_count": 6})
    indexes = await db.fetch("SELECT gpu_index FROM gpu_devices WHERE machine_id='m1' "
                             "ORDER BY 1")
    assert [r[0] for r in indexes] == [0, 1, 2, 3, 4, 5]


async def test_patch_unknown_machine_is_40401(admin):
    status, _ = await admin.patch(f"{MACHINES}/ghost", {"name": "x"})
    assert status == 404


async def test_delete_idle_machine(admin, db):
    await admin.machine("m1")
    assert await admin.ok("DELETE", f"{MACHINES}/m1") is None
    assert await db.fetchval("SELECT count(*) FROM machines") == 0
    assert await db.fetchval("SELECT count(*) FROM gpu_devices") == 0


async def test_delete_allocated_machine_is_40901(admin, accounts):
    await admin.machine("m1")
    await admin.allocate("m1", await accounts.tenant())
    status, body = await admin.delete(f"{MACHINES}/m1")
    assert (status, body["code"], body["data"]) == (409, 40901, {"allocation_status":
                                                                 "allocated"})


async def test_delete_keeps_the_lease_history(admin, accounts, db):
    await admin.machine("m1")
    await admin.allocate("m1", await accounts.tenant())
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "done", "force": True})
    await admin.ok("DELETE", f"{MACHINES}/m1")
    data = await admin.ok("GET", "/api/v1/admin/allocations?machine_id=m1")
    assert data["total"] == 1 and data["list"][0]["machine_name"] == "m1"


async def test_delete_unknown_machine_is_40401(admin):
    status, _ = await admin.delete(f"{MACHINES}/ghost")
    assert status == 404


async def test_maintenance_on_and_off(admin):
    await admin.machine("m1")
    data = await admin.ok("POST", f"{MACHINES}/m1/maintenance",
                          {"enabled": True, "reason": "disk swap"})
    assert (data["allocation_status"], data["maintenance_reason"]) == ("maintenance",
                                                                       "disk swap")
    data = await admin.ok("POST", f"{MACHINES}/m1/maintenance", {"enabled": False})
    assert (data["allocation_status"], data["maintenance_reason"]) == ("idle", None)


async def test_maintenance_of_a_leased_machine_is_40901(admin, accounts):
    await admin.machine("m1")
    await admin.allocate("m1", await accounts.tenant())
    status, body = await admin.post(f"{MACHINES}/m1/maintenance", {"enabled": True})
    assert (status, body["code"]) == (409, 40901)


async def test_leaving_maintenance_during_a_reclaim_is_40901(admin, accounts):
    await admin.machine("m1")
    await admin.allocate("m1", await accounts.tenant())
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "overdue"})
    status, body = await admin.post(f"{MACHINES}/m1/maintenance", {"enabled": False})
    assert (status, body["code"]) == (409, 40901)


async def test_leaving_maintenance_when_not_in_it_is_40901(admin):
    await admin.machine("m1")
    status, _ = await admin.post(f"{MACHINES}/m1/maintenance", {"enabled": False})
    assert status == 409


async def test_rotating_the_agent_token_replaces_the_stored_hash(admin, db):
    first = (await admin.machine("m1"))["agent_token"]
    data = await admin.ok("POST", f"{MACHINES}/m1/agent-token")
    assert data["machine_id"] == "m1" and data["agent_token"] != first
    stored = await db.fetchval("SELECT agent_token_hash FROM machines WHERE id = 'm1'")
    assert stored == hashlib.sha256(data["agent_token"].encode()).digest()


async def test_rotating_the_token_of_an_unknown_machine_is_40401(admin):
    status, _ = await admin.post(f"{MACHINES}/ghost/agent-token")
    assert status == 404


@pytest.fixture
async def fleet(admin, accounts):
    """Ten machines over two regions and GPU models; three leased to Acme, one to Beta."""
    acme, beta = await accounts.tenant("Acme"), await accounts.tenant("Beta")
    for i in range(10):
        await admin.machine(f"node-{i:02d}", name=f"{'bj' if i < 6 else 'sh'}-gpu-{i}",
                            region="beijing" if i < 6 else "shanghai",
                            gpu_model="NVIDIA GeForce RTX 4090" if i % 2 else "NVIDIA H100",
                            ip=f"10.0.{i}.{i + 1}")
    for i in (1, 2, 3):
        await admin.allocate(f"node-{i:02d}", acme)
    await admin.allocate("node-09", beta)
    await admin.ok("POST", f"{MACHINES}/node-08/maintenance", {"enabled": True})
    return {"acme": acme, "beta": beta}


async def _ids(admin: Api, query: str) -> tuple[list[str], int]:
    data = await admin.ok("GET", f"{MACHINES}?page_size=100&{query}")
    return [m["id"] for m in data["list"]], data["total"]


async def test_list_is_paged_by_id_with_the_total(admin, fleet):
    data = await admin.ok("GET", f"{MACHINES}?page=2&page_size=4")
    assert [m["id"] for m in data["list"]] == ["node-04", "node-05", "node-06", "node-07"]
    assert (data["total"], data["page"], data["page_size"]) == (10, 2, 4)
    data = await admin.ok("GET", f"{MACHINES}?page=4&page_size=4")
    assert (data["list"], data["total"]) == ([], 10)


async def test_list_items_have_the_contract_fields(admin, fleet):
    item = (await admin.ok("GET", f"{MACHINES}?keyword=node-01"))["list"][0]
    assert {"id", "name", "region", "status", "allocation_status", "ip", "gpu_info", "cpu_info",
            "memory_total", "disk_total", "tenant_name", "expires_at",
            "last_heartbeat_at"} <= set(item)
    assert item["tenant_name"] == "Acme" and item["expires_at"].endswith("Z")


async def test_list_filters_gpu_model_by_case_insensitive_substring(admin, fleet):
    assert await _ids(admin, "gpu_model=rtx 4090") == (
        ["node-01", "node-03", "node-05", "node-07", "node-09"], 5)
    assert (await _ids(admin, "gpu_model=NVIDIA H100"))[1] == 5


async def test_list_filters_by_allocation_status(admin, fleet):
    assert await _ids(admin, "allocation_status=allocated") == (
        ["node-01", "node-02", "node-03", "node-09"], 4)
    assert await _ids(admin, "allocation_status=maintenance") == (["node-08"], 1)


async def test_list_filters_by_status(admin, fleet, db):
    await db.execute("UPDATE machines SET status = 'online' WHERE id IN ('node-00', 'node-05')")
    assert await _ids(admin, "status=online") == (["node-00", "node-05"], 2)
    assert (await _ids(admin, "status=offline"))[1] == 8


async def test_list_filters_by_region_and_tenant_together(admin, fleet):
    assert await _ids(admin, f"region=beijing&tenant_id={fleet['acme']}") == (
        ["node-01", "node-02", "node-03"], 3)
    assert await _ids(admin, f"region=shanghai&tenant_id={fleet['acme']}") == ([], 0)


async def test_list_keyword_matches_id_name_or_ip(admin, fleet):
    assert await _ids(admin, "keyword=sh-gpu") == (["node-06", "node-07", "node-08",
                                                    "node-09"], 4)
    assert await _ids(admin, "keyword=10.0.4.5") == (["node-04"], 1)
    assert await _ids(admin, "keyword=NODE-02") == (["node-02"], 1)
    assert await _ids(admin, "keyword=%25") == ([], 0)


async def test_list_rejects_unknown_filter_values(admin):
    status, body = await admin.get(f"{MACHINES}?status=sleeping&tenant_id=x")
    assert status == 400
    assert {e["field"] for e in body["data"]["errors"]} == {"status", "tenant_id"}


async def test_a_tenant_id_filter_beyond_64_bits_is_40001(admin):
    status, body = await admin.get(f"{MACHINES}?tenant_id={2**63}")
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001,
                                                                          "tenant_id")


@pytest.mark.parametrize("machine_id", ["m" * 65, "bad%20id", "m%00"])
async def test_a_path_id_that_is_no_machine_id_is_40401(admin, machine_id):
    status, body = await admin.get(f"{MACHINES}/{machine_id}")
    assert (status, body["code"]) == (404, 40401)


async def test_customer_cannot_use_admin_machine_routes(client, accounts):
    customer = await Api.login(client, await accounts.customer())
    for method, path in [("GET", MACHINES), ("POST", MACHINES), ("GET", f"{MACHINES}/m1"),
                         ("DELETE", f"{MACHINES}/m1")]:
        status, body = await call(client, method, path, token=customer.token, json={})
        assert (status, body["code"]) == (403, 40301), (method, path)


async def test_operator_can_manage_machines(client, accounts):
    operator = await Api.login(client, await accounts.user("ops", "operator"))
    await operator.machine("m1")
    assert (await operator.ok("GET", MACHINES))["total"] == 1
