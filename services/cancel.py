"""Cancelling tasks at shutdown without waiting on them for ever.

A task cancelled in the middle of a database call may take long to end: the driver's
cleanup (a cancel request, a connection reset) needs the very network that may be gone.
Shutdown gives such a task a moment, then leaves it; the process exits anyway, within
its grace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 1.0


async def cancel_within(tasks: Iterable[asyncio.Task[object]],
                        wait_s: float = CANCEL_WAIT_S) -> None:
    """Cancel the tasks and wait at most ``wait_s`` for them to end."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=wait_s)
    for task in stuck:
        log.warning("task left running at shutdown", extra={"task": task.get_name()})


async def finish_within(task: asyncio.Task[object], timeout_s: float) -> None:
    """Let ``task`` end by itself within ``timeout_s``; past that (less the moment a
    cancellation is given), cancel it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout_s, 0.0)
    try:
        async with asyncio.timeout_at(deadline - min(CANCEL_WAIT_S, timeout_s / 2)):
            await asyncio.shield(task)
    except TimeoutError:
        await cancel_within([task], max(0.0, deadline - loop.time()))
