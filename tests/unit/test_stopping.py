"""Background jobs stop between runs: a run under way finishes (a task cancelled while
Tortoise begins a transaction would keep its connection or lock for good)."""

from __future__ import annotations

import asyncio

import pytest

from claims_realtime.models.history import Retention
from claims_realtime.realtime import stopping
from claims_realtime.realtime.hub import Hub
from claims_realtime.realtime.server import create_socket_server


async def test_a_run_under_way_finishes_and_a_late_one_is_cancelled() -> None:
    asked = asyncio.Event()
    runs: list[str] = []

    async def job(name: str, seconds: float) -> None:
        while await stopping.pause(asked, 0.001):
            pass
        runs.append(f"{name} asked")
        await asyncio.sleep(seconds)
        runs.append(f"{name} finished")

    quick = asyncio.create_task(job("quick", 0.05))
    slow = asyncio.create_task(job("slow", 60))
    await asyncio.sleep(0.01)
    asked.set()
    await stopping.finish([quick, slow], grace=0.5)
    assert sorted(runs) == ["quick asked", "quick finished", "slow asked"]
    assert slow.cancelled() and not quick.cancelled()


async def test_pause_answers_at_once_when_asked_to_stop() -> None:
    asked = asyncio.Event()
    asked.set()
    assert await asyncio.wait_for(stopping.pause(asked, 3600), 5) is False


@pytest.mark.usefixtures("db")
async def test_the_hub_lets_a_flush_under_way_finish_when_stopped() -> None:
    hub = Hub(
        create_socket_server(),
        Retention(max_events=100, ttl_seconds=60),
        max_event_data_bytes=16_384,
        flush_interval=0.001,
    )
    flushing = asyncio.Event()
    flushes: list[str] = []
    written = hub.flush

    async def slow_flush(channel_id: str | None = None) -> None:
        flushes.append("began")
        flushing.set()
        await asyncio.sleep(0.1)  # the transaction a cancel would have cut short
        await written(channel_id)
        flushes.append("ended")

    hub.flush = slow_flush  # type: ignore[method-assign]
    await hub.start()
    await flushing.wait()
    await hub.stop()  # its own last flush runs after the job's
    assert flushes[:2] == ["began", "ended"]
    assert flushes.count("began") == flushes.count("ended")
