"""The simulated machines' descriptions."""

from __future__ import annotations

import ipaddress
from collections import Counter

from agent_mock.fleet import GPU_MODELS, REGIONS, fleet, machine_spec


def test_a_fleet_is_a_believable_mix_with_unique_ids_and_addresses():
    specs = fleet("sim-", 2000)
    assert specs[0].id == "sim-00001" and specs[-1].id == "sim-02000"
    assert len({spec.ip for spec in specs}) == 2000
    assert all(ipaddress.ip_address(spec.ip) in ipaddress.ip_network("10.0.0.0/8")
               for spec in specs)
    assert not any(spec.ip.endswith((".0", ".255")) for spec in specs)
    assert Counter(spec.region for spec in specs) == dict.fromkeys(REGIONS, 500)
    models = Counter(spec.model.name for spec in specs)
    assert set(models) == {model.name for model in GPU_MODELS}
    assert {spec.gpu_count for spec in specs} == {4, 8}


def test_create_fields_match_the_gpu_model():
    for index in range(1, 200):
        body = machine_spec("sim-", index).create_body()
        model = next(m for m in GPU_MODELS if m.name == body["gpu_model"])
        assert body["gpu_memory_gb"] == model.memory_gb
        # nvidia-smi reports a little less than the nominal size (ECC, reserved memory).
        assert 0.9 * model.memory_gb <= model.memory_mib / 1024 <= model.memory_gb
        assert body["gpu_count"] in model.counts
        assert 1 <= body["ssh_port"] <= 65535
        assert 1 <= len(body["name"]) <= 128


def test_a_machine_is_described_the_same_way_by_every_run():
    assert machine_spec("sim-", 17) == machine_spec("sim-", 17)
    assert fleet("sim-", 50) == fleet("sim-", 50)
    assert machine_spec("lab-", 17).model == machine_spec("sim-", 17).model


def test_the_hub_accepts_the_create_fields():
    # The hub's own model: catches drift between the simulator and the contract.
    from services.machines import MachineSpec as HubMachineSpec

    for index in range(1, 50):
        HubMachineSpec.model_validate(machine_spec("sim-", index).create_body())
