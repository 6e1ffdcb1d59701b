"""Running a fleet: register it, start one agent per machine, report, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import random
import sys

import aiohttp

from agent_mock.agent import Agent, Fleet
from agent_mock.counters import Counters
from agent_mock.fleet import MachineSpec
from agent_mock.fleet import fleet as fleet_specs
from agent_mock.options import Options
from agent_mock.registration import register
from agent_mock.telemetry import MachineSim

log = logging.getLogger("agent_mock")

# Per request, not per socket: a WebSocket lives on after its handshake.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)


def chosen(rng: random.Random, count: int, fraction: float) -> set[int]:
    """round(count * fraction) distinct positions, so small fleets get what the fraction
    says rather than a coin toss per machine; and at least one when the fraction is above
    0, so even a small fleet (the 20 machines of ``./dev run``) shows each behaviour, and
    the alerts of an overheating and a silent machine."""
    wanted = round(count * fraction)
    return set(rng.sample(range(count), max(wanted, 1) if fraction > 0 else wanted))


def build_agents(fleet: Fleet, specs: list[MachineSpec], tokens: dict[str, str]
                 ) -> list[Agent]:
    options = fleet.options
    rng = fleet.rng
    count = len(specs)
    overheat = chosen(rng, count, options.overheat_fraction)
    idle = chosen(rng, count, options.idle_fraction)
    silent = chosen(rng, count, options.silent_fraction)
    agents = []
    for i, spec in enumerate(specs):
        sim = MachineSim(spec, rng, busy=i not in idle, overheat=i in overheat,
                         health_rate=options.health_event_rate)
        silent_after = (options.silent_after * rng.uniform(0.5, 1.5) if i in silent
                        else None)
        agents.append(Agent(fleet, spec, tokens[spec.id], sim,
                            phase=rng.uniform(0.0, options.interval),
                            silent_after=silent_after))
    return agents


def _crashed(task: asyncio.Task[None], counters: Counters) -> None:
    """An agent that died of a bug is reported at once, not when the run ends."""
    if not task.cancelled() and task.exception() is not None:
        counters.errors += 1
        log.error("%s crashed", task.get_name(), exc_info=task.exception())


async def _report(counters: Counters, every: float, started: float) -> None:
    loop = asyncio.get_running_loop()
    frames_before = counters.frames
    while True:
        await asyncio.sleep(every)
        print(counters.summary(loop.time() - started, frames_before, every), file=sys.stderr)
        frames_before = counters.frames


async def run(options: Options, counters: Counters | None = None) -> Counters:
    """Register the fleet (or read its tokens), then stream until ``options.duration``
    has passed, every agent has stopped, or the task is cancelled (Ctrl-C); the counters
    are returned (pass your own to watch them while it runs). Raises AgentMockError when
    the fleet cannot be registered."""
    counters = counters if counters is not None else Counters()
    loop = asyncio.get_running_loop()
    # limit=0: the default of 100 connections would silently stall the 101st agent.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, timeout=HTTP_TIMEOUT) as session:
        fleet = Fleet(session=session, options=options, counters=counters,
                      rng=random.Random(options.seed))
        specs = fleet_specs(options.id_prefix, options.machines)
        registration = await register(session, options, specs)
        agents = build_agents(fleet, specs, registration.tokens)
        counters.machines = len(agents)
        started = loop.time()
        tasks = [asyncio.create_task(agent.run(), name=f"agent {agent.spec.id}")
                 for agent in agents]
        for task in tasks:
            task.add_done_callback(lambda task: _crashed(task, counters))
        reporter = (asyncio.create_task(_report(counters, options.summary_interval, started))
                    if options.summary_interval else None)
        try:
            await asyncio.wait(tasks, timeout=options.duration)
        finally:
            if reporter is not None:
                reporter.cancel()
            for task in tasks:
                task.cancel()
            # Agents close their sockets (the close handshake waits at most a second).
            await asyncio.wait(tasks)
            if reporter is not None:
                await asyncio.wait({reporter})
            print(counters.summary(loop.time() - started), file=sys.stderr)
    return counters
