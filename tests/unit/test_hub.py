"""The hub's own bookkeeping, without a database."""

from __future__ import annotations

import asyncio

import pytest

from claims_realtime.models.history import Retention
from claims_realtime.realtime import hub as hub_module
from claims_realtime.realtime.hub import MAX_CONCURRENT_ATTACHES, Hub
from claims_realtime.realtime.protocol import Refusal
from claims_realtime.realtime.server import create_socket_server


async def test_attaches_run_a_bounded_number_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect storm queues for the bound instead of holding every attach's queries in
    memory at once; every attach still runs."""
    hub = Hub(
        create_socket_server(),
        Retention(max_events=100, ttl_seconds=60),
        max_event_data_bytes=16_384,
    )
    running = peak = done = 0

    async def channel_or_none(channel_id: str) -> None:  # the attach's first query
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        done += 1

    monkeypatch.setattr(hub_module.subscriptions, "channel_or_none", channel_or_none)
    outcomes = await asyncio.gather(
        *(
            hub.attach(f"chan_{i}", f"/channels/chan_{i}", f"sid{i}", f"eio{i}", "token", None)
            for i in range(4 * MAX_CONCURRENT_ATTACHES)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, Refusal) for outcome in outcomes)  # no such channels
    assert peak == MAX_CONCURRENT_ATTACHES
    assert done == 4 * MAX_CONCURRENT_ATTACHES
