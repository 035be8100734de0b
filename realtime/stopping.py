"""Stopping background jobs between their runs rather than in the middle of one.

A task cancelled while Tortoise begins a transaction never gives back what it took (the
pooled PostgreSQL connection, or SQLite's transaction lock), and closing the pool then waits
10 s for the connection. So the hub's and the webhook dispatcher's loops are asked to stop,
finish the run they are in, and are cancelled only if that takes longer than a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

#: Seconds a job may take to finish its run once asked to stop, before it is cancelled.
STOP_GRACE_SECONDS = 3.0


async def pause(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, or less if asked to stop; answer whether to go on."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
    return not stopping.is_set()


async def finish(tasks: Iterable[asyncio.Task[None]], grace: float = STOP_GRACE_SECONDS) -> None:
    """Wait up to `grace` seconds for `tasks` (already asked to stop), then cancel the rest;
    their errors are theirs to log."""
    pending = [task for task in tasks if not task.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
