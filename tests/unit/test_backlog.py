"""The per-connection send backlog bound: a slow consumer is dropped once, its queue freed,
its resume point kept at what it confirmed; a replay paces itself under the bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from claims_realtime.realtime.fanout import Fanout, Subscriber
from claims_realtime.realtime.protocol import message_packet
from claims_realtime.realtime.sockets import StockTransport
from tests.unit.test_fanout import CHANNEL, NAMESPACE, FakeServer, FakeSocket, History

BACKLOG = 10


class ClosingSocket(FakeSocket):
    """A fake Engine.IO socket that can be closed, as the drop does."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.closes: list[dict[str, Any]] = []

    async def close(self, **kwargs: Any) -> None:
        self.closes.append(kwargs)
        self.closed = True


class Reasons:
    TRANSPORT_ERROR = "transport error"


@pytest.fixture
def server() -> FakeServer:
    fake = FakeServer()
    fake.reason = Reasons()  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
def fanout(server: FakeServer, history: History) -> Fanout:
    return Fanout(StockTransport(server), history.read, page_size=500, max_backlog=BACKLOG)


def attach(fanout: Fanout, server: FakeServer, sid: str, cursor: int, head: int) -> ClosingSocket:
    socket = ClosingSocket()
    server.sockets[f"eio-{sid}"] = socket
    sub = Subscriber(
        sid=sid, eio_sid=f"eio-{sid}", channel_id=CHANNEL, namespace=NAMESPACE, cursor=cursor
    )
    fanout.attach(sub, head=head, recovery_packet=message_packet(CHANNEL, "recovery", {}))
    fanout.connected(sid, CHANNEL)
    return socket


async def live(fanout: Fanout, sid: str) -> None:
    for _ in range(1000):
        sub = fanout.subscriber(sid, CHANNEL)
        if sub is not None and not sub.catching_up:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("replay did not finish")


async def test_a_connection_past_the_bound_is_dropped_once_and_its_queue_freed(
    fanout: Fanout, server: FakeServer, history: History
) -> None:
    socket = attach(fanout, server, "a", cursor=0, head=0)
    await live(fanout, "a")
    socket.queue.get_nowait()  # the recovery message was read
    fanout.deliver_all({CHANNEL: history.commit(1, 2)})
    fanout.confirm("a", CHANNEL, 2)
    fanout.take_positions()  # written back already
    # The client stops reading: the queue fills to the bound, then the next write drops it.
    fanout.deliver_all({CHANNEL: history.commit(*range(3, 3 + BACKLOG + 5))})
    assert fanout.slow_consumer_drops == 1
    assert socket.queue.qsize() == 0  # what it would never read is not kept
    assert fanout.subscriber("a", CHANNEL).dropped  # type: ignore[union-attr]
    fanout.deliver_all({CHANNEL: history.commit(100)})  # nothing more is written to it
    assert socket.queue.qsize() == 0 and fanout.slow_consumer_drops == 1
    await asyncio.sleep(0)
    assert len(socket.closes) == 1 and socket.closes[0]["abort"] is True
    # `delivered` moved on when events were queued; the resume point must not: a confirmed
    # position is on record (never lowering what the client did confirm).
    delivered, confirmed = fanout.pending_positions(CHANNEL)
    assert confirmed == 0 and delivered is not None and delivered > 2


async def test_a_replay_longer_than_the_bound_paces_itself_and_is_not_dropped(
    fanout: Fanout, server: FakeServer, history: History
) -> None:
    history.commit(*range(1, 51))
    socket = attach(fanout, server, "a", cursor=0, head=50)
    received: list[Any] = []
    most = 0
    while len(received) < 51:  # recovery + 50 events, read slowly
        most = max(most, socket.queue.qsize())
        if socket.queue.empty():
            await asyncio.sleep(0.002)
            continue
        received.append(socket.queue.get_nowait())
        await asyncio.sleep(0.001)
    await live(fanout, "a")
    assert fanout.slow_consumer_drops == 0
    assert most <= BACKLOG


async def test_a_replay_to_a_client_that_never_reads_waits_under_the_bound(
    fanout: Fanout, server: FakeServer, history: History
) -> None:
    history.commit(*range(1, 51))
    socket = attach(fanout, server, "a", cursor=0, head=50)
    await asyncio.sleep(0.1)
    assert 0 < socket.queue.qsize() < BACKLOG
    assert fanout.slow_consumer_drops == 0
    fanout.detach("a", CHANNEL)  # the connection ends (e.g. its ping timeout): replay stops
