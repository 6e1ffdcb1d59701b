"""Command-line flags of ``remotegpu agent-mock`` (CONTRACT.md §7) and a ``main`` to run
it; ``python -m agent_mock`` uses the same flags."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

try:
    import uvloop
except ImportError:  # the simulator also runs on the standard loop
    uvloop = None

from agent_mock.options import DEFAULT_TOKENS_FILE, AgentMockError, Options
from agent_mock.runner import run

# Where the admin password is read from when --admin-password is not given: a command line
# is readable by every user of the machine (`ps`), a process's environment only by its own.
PASSWORD_ENV = "REMOTEGPU_ADMIN_PASSWORD"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in 0..1: {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``agent-mock``; read them back with ``options_from_args``."""
    parser.add_argument("--hub", required=True, help="hub base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--machines", type=_count, required=True,
                        help="how many machines to simulate")
    parser.add_argument("--interval", type=_positive, default=5.0,
                        help="seconds between two frames of a machine (default 5)")
    parser.add_argument("--transport", choices=("ws", "http"), default="ws",
                        help="stream over /ws/agent (default) or POST heartbeats")
    parser.add_argument("--admin-user",
                        help="register the fleet with this admin (or operator) account")
    parser.add_argument("--admin-password",
                        help=f"that account's password (default: ${PASSWORD_ENV}, which "
                             "keeps it out of `ps`)")
    parser.add_argument("--tokens-file", type=Path, default=DEFAULT_TOKENS_FILE,
                        help="JSON {machine_id: agent_token}: written after registration "
                             "(mode 0600), read alone when no admin account is given "
                             f"(default {DEFAULT_TOKENS_FILE})")
    parser.add_argument("--id-prefix", default="sim-",
                        help="machine ids are PREFIX00001.. (default sim-)")
    parser.add_argument("--overheat-fraction", type=_fraction, default=0.01,
                        help="share of machines whose GPUs run above 90 °C (default 0.01); "
                             "like every share, at least one machine when above 0")
    parser.add_argument("--silent-fraction", type=_fraction, default=0.01,
                        help="share of machines that go quiet after a while (default 0.01)")
    parser.add_argument("--silent-after", type=_non_negative, default=60.0,
                        help="a silent machine goes quiet after 0.5-1.5x this many seconds "
                             "(default 60)")
    parser.add_argument("--idle-fraction", type=_fraction, default=0.2,
                        help="share of machines with no workload at the start (default 0.2)")
    parser.add_argument("--health-event-rate", type=_fraction, default=0.0,
                        help="chance per GPU per frame of an XID, ECC or row-remap event "
                             "(default 0: none)")
    parser.add_argument("--job-delay-scale", type=_non_negative, default=1.0,
                        help="multiplies how long commands take (reclaim ~3 s; default 1)")
    parser.add_argument("--register-concurrency", type=_count, default=20,
                        help="admin requests in flight while registering (default 20)")
    parser.add_argument("--summary-interval", type=_non_negative, default=10.0,
                        help="seconds between summary lines on stderr; 0: only at exit "
                             "(default 10)")
    parser.add_argument("--duration", type=_positive, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed the simulated dynamics, for repeatable runs")


def options_from_args(args: argparse.Namespace,
                      environ: Mapping[str, str] = os.environ) -> Options:
    """Raises AgentMockError for combinations argparse cannot check (an admin user
    without a password)."""
    password = args.admin_password
    if password is None and args.admin_user is not None:
        password = environ.get(PASSWORD_ENV)
    return Options(
        hub=args.hub, machines=args.machines, interval=args.interval,
        transport=args.transport, admin_user=args.admin_user,
        admin_password=password, tokens_file=args.tokens_file,
        id_prefix=args.id_prefix, overheat_fraction=args.overheat_fraction,
        silent_fraction=args.silent_fraction, silent_after=args.silent_after,
        idle_fraction=args.idle_fraction, health_event_rate=args.health_event_rate,
        job_delay_scale=args.job_delay_scale,
        register_concurrency=args.register_concurrency,
        summary_interval=args.summary_interval, duration=args.duration, seed=args.seed)


async def _run_until_stopped(options: Options) -> None:
    """``run``, ended cleanly by SIGTERM as well as by Ctrl-C."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        await run(options)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(args: argparse.Namespace) -> int:
    """Run the fleet until --duration, Ctrl-C or SIGTERM; the exit status (1: a failure
    already explained on stderr)."""
    try:
        with asyncio.Runner(loop_factory=uvloop and uvloop.new_event_loop) as runner:
            runner.run(_run_until_stopped(options_from_args(args)))
    except AgentMockError as exc:
        print(f"remotegpu agent-mock: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        # How a run without --duration ends; the summary is already printed.
        pass
    return 0
