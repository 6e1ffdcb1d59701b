"""Schemathesis over every operation of the served OpenAPI document (CONTRACT.md §1a): as
an admin and as a customer, with data that fits the document and data that does not, no
answer is a 5xx and every answer has a documented status and matches its schema.

The hub runs on a real loopback port (the ``client`` fixture's server); schemathesis is
synchronous, so it drives the hub from a worker thread while the event loop serves.
Seeded, bounded and without an example database: the same cases every run, quickly.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.errors import FailureGroup

from api.keys import ALERTS
from tests.agent_frames import frame
from tests.helpers import Api, bearer, login

MAX_EXAMPLES = 20  # per operation and generation mode
SETTINGS = settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                    phases=[Phase.explicit, Phase.generate], print_blob=False,
                    suppress_health_check=list(HealthCheck))
CHECKS = [schemathesis.checks.not_a_server_error,
          schemathesis.checks.status_code_conformance,
          schemathesis.checks.response_schema_conformance]
# WebSocket upgrades: an HTTP request and response cannot describe the protocol.
SOCKETS = frozenset({"GET /ws/agent", "GET /ws/connect"})
# End the caller's login (a password reset does when the generated id is the caller's):
# fuzzed on their own, with a fresh login per example.
LOGOUT = "POST /api/v1/auth/logout"
RESET_PASSWORD = "POST /api/v1/admin/users/{id}/reset-password"
SESSION_ENDING = frozenset({LOGOUT, RESET_PASSWORD})
_PATH_PARAM = re.compile(r"{(\w+)}")

Headers = Callable[[], dict[str, str]]


@dataclass
class Known:
    """Ids of real objects, which random ones would never hit: positive cases use them
    too, so they get past "not found" into the code that stores what they carry."""

    paths: dict[str, list[str]] = field(default_factory=dict)  # segment before the id -> ids
    body: dict[str, Any] = field(default_factory=dict)  # body field -> a value naming one


@dataclass
class World:
    """A small fleet, so lists and details have items whose schemas get checked too."""

    admin: Api
    customer: Api
    known: Known


@pytest.fixture
async def world(client, accounts) -> World:
    admin = await Api.login(client, await accounts.user("root-admin"))
    alice = await accounts.customer("alice", "Acme")
    customer = await Api.login(client, alice)
    leased = await admin.machine("m1", gpu_count=2)
    await admin.machine("m2")
    await admin.machine("m3")
    await admin.ok("POST", "/api/v1/admin/machines/m3/maintenance", {"enabled": True})
    allocation_id = await admin.allocate("m1", alice.tenant_id, remark="fuzz")
    status, _ = await Api(client, leased["agent_token"]).post("/api/v1/agent/heartbeat",
                                                              frame())
    assert status == 200
    job = await customer.ok("POST", "/api/v1/customer/machines/m1/ssh-reset", {})
    await client.app[ALERTS].raise_("m2", "disk_full", "disk full")
    _, alerts = await admin.get("/api/v1/admin/alerts")
    operator = await accounts.user("fuzz-operator", "operator")
    return World(admin=admin, customer=customer, known=Known(
        paths={"machines": ["m1", "m2"], "allocations": [allocation_id],
               "jobs": [job["job_id"]], "alerts": [alerts["data"]["list"][0]["id"]],
               "customers": [str(alice.tenant_id)], "users": [str(operator.id)]},
        body={"tenant_id": alice.tenant_id, "machine_ids": ["m2"]},
    ))


def _base_url(client) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_no_answer_is_a_5xx_or_undocumented_for_an_admin(client, world):
    failures = await asyncio.to_thread(_fuzz, _base_url(client), world.known,
                                       lambda: bearer(world.admin.token),
                                       skip=SOCKETS | SESSION_ENDING)
    assert not failures, "\n\n".join(failures)


async def test_no_answer_is_a_5xx_or_undocumented_for_a_customer(client, world):
    failures = await asyncio.to_thread(_fuzz, _base_url(client), world.known,
                                       lambda: bearer(world.customer.token),
                                       skip=SOCKETS | SESSION_ENDING)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("operation", sorted(SESSION_ENDING))
async def test_session_ending_operations_answer_as_documented_with_a_fresh_login_each(
        client, accounts, operation):
    # One account per login, so the login throttle never sees one user log in often.
    tokens = [(await login(client, await accounts.user(f"admin-{i}")))["access_token"]
              for i in range(2 * MAX_EXAMPLES)]
    fresh = _fresh(tokens)
    failures = await asyncio.to_thread(_fuzz, _base_url(client), Known(),
                                       lambda: bearer(next(fresh)), only=operation)
    assert not failures, "\n\n".join(failures)


def _fresh(tokens: list[str]) -> Iterator[str]:
    """Each token once; then the last one again (logged out by then: a documented 401)."""
    yield from tokens
    while True:
        yield tokens[-1]


def _fuzz(base_url: str, known: Known, headers: Headers, *,
          skip: frozenset[str] = frozenset(), only: str | None = None) -> list[str]:
    """Runs every operation of the served document (or ``only`` one); the failures found,
    each with schemathesis's report and a curl command that repeats it."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json",
                                           config=schemathesis.Config())
    failures = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.label in skip or only not in (None, operation.label):
                continue
            for mode in _modes(operation):
                try:
                    _run(_cases(operation, mode, known), base_url, session, headers)
                except (Exception, FailureGroup) as exc:  # report it, go on with the rest
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


def _modes(operation) -> list[GenerationMode]:
    """Negative data needs something to break: a parameter (the bearer token counts) or
    a body."""
    if operation.body or next(iter(operation.iter_parameters()), None) is not None:
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def _cases(operation, mode: GenerationMode, known: Known) -> st.SearchStrategy:
    """Generated cases; positive ones also with real ids in the path and the body. Never
    for DELETE: the operations after it would have nothing real left to act on."""
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.NEGATIVE or operation.method.upper() == "DELETE":
        return strategy
    variants = [strategy]
    names = _PATH_PARAM.findall(operation.path)
    if names:
        segment = operation.path.split("/{")[0].rsplit("/", 1)[-1]
        variants += [operation.as_strategy(path_parameters={names[0]: known_id})
                     for known_id in known.paths.get(segment, [])]
    if operation.body:
        variants += [variant.map(partial(_with_known_body, known.body)) for variant in variants]
    return st.one_of(variants)


def _with_known_body(values: dict[str, Any], case: Case) -> Case:
    if isinstance(case.body, dict):
        case.body.update({name: value for name, value in values.items() if name in case.body})
    return case


def _run(cases: st.SearchStrategy, base_url: str, session: requests.Session,
         headers: Headers) -> None:
    @SETTINGS
    @given(case=cases)
    def check(case) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers(),
                             timeout=10)
        case.validate_response(response, checks=CHECKS)

    check()
