"""The seam between replay and live delivery, with a scripted history and fake sockets.

Each test drives `Fanout` the way the hub does (attach, deliver after commit, detach) and
checks exactly which packets each socket got, in which order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from socketio import packet as sio_packet

from claims_realtime.realtime.fanout import Fanout, Subscriber
from claims_realtime.realtime.protocol import message_packet
from claims_realtime.realtime.sockets import StockTransport

CHANNEL = "chan_test"
NAMESPACE = f"/channels/{CHANNEL}"


def event(sequence: int) -> tuple[int, str]:
    """A stand-in for an encoded event packet of the channel."""
    return sequence, message_packet(CHANNEL, "claim_submitted", {"sequence": sequence})


class FakeSocket:
    def __init__(self) -> None:
        self.closed = False
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        """(event name, payload) of every packet written so far."""
        out = []
        while not self.queue.empty():
            pkt = sio_packet.Packet(encoded_packet=self.queue.get_nowait().data)
            out.append((pkt.data[0], pkt.data[1]))
        return out


@dataclass
class FakeServer:
    """What Fanout's transport (realtime.sockets.StockTransport) uses of python-socketio's
    AsyncServer."""

    sockets: dict[str, FakeSocket] = field(default_factory=dict)
    disconnected: list[str] = field(default_factory=list)

    @property
    def eio(self) -> FakeServer:
        return self

    @property
    def manager(self) -> FakeServer:
        return self

    def is_connected(self, sid: str, namespace: str) -> bool:
        return True

    async def disconnect(self, sid: str, namespace: str) -> None:
        self.disconnected.append(sid)


class History:
    """Committed events; `read` can be held open to script a race with a commit."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str]] = []
        self.gate: asyncio.Event | None = None
        self.reads = 0

    def commit(self, *sequences: int) -> list[tuple[int, str]]:
        entries = [event(s) for s in sequences]
        self.rows.extend(entries)
        return entries

    async def read(self, channel_id: str, after: int, limit: int) -> list[tuple[int, str]]:
        snapshot = [row for row in self.rows if row[0] > after][:limit]
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()  # the read took its snapshot, then waits
        return snapshot


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
def fanout(server: FakeServer, history: History) -> Fanout:
    return Fanout(StockTransport(server), history.read, page_size=3)


def attach(fanout: Fanout, server: FakeServer, sid: str, cursor: int, head: int) -> FakeSocket:
    socket = server.sockets.setdefault(f"eio-{sid}", FakeSocket())
    sub = Subscriber(
        sid=sid, eio_sid=f"eio-{sid}", channel_id=CHANNEL, namespace=NAMESPACE, cursor=cursor
    )
    fanout.attach(
        sub, head=head, recovery_packet=message_packet(CHANNEL, "recovery", {"cursor": cursor})
    )
    fanout.connected(sid, CHANNEL)  # as the server does once CONNECT is queued
    return socket


async def settle(fanout: Fanout) -> None:
    """Let replay tasks run until every socket is live again."""
    for _ in range(2000):
        await asyncio.sleep(0.001)
        subs = [s for subs in fanout._channels.values() for s in subs.values()]
        if all(not s.catching_up for s in subs):
            return
    raise AssertionError("replay did not finish")


def sequences(received: list[tuple[str, dict[str, Any]]]) -> list[int]:
    return [payload["sequence"] for name, payload in received if name != "recovery"]


async def test_recovery_first_then_history_after_cursor_then_live(fanout, server, history):
    history.commit(1, 2, 3, 4, 5, 6, 7)  # more than one page (page_size=3)
    socket = attach(fanout, server, "a", cursor=2, head=7)
    await settle(fanout)
    fanout.deliver_all({CHANNEL: history.commit(8)})
    received = socket.received()
    assert received[0] == ("recovery", {"cursor": 2})
    assert sequences(received) == [3, 4, 5, 6, 7, 8]


async def test_events_committed_during_replay_are_neither_lost_nor_repeated(
    fanout, server, history
):
    history.commit(1, 2)
    history.gate = asyncio.Event()
    socket = attach(fanout, server, "a", cursor=0, head=2)
    await asyncio.sleep(0.01)  # the replay read has its snapshot (1, 2) and is held
    fanout.deliver_all({CHANNEL: history.commit(3)})  # live while replaying: left to the replay
    fanout.deliver_all({CHANNEL: history.commit(4)})
    history.gate.set()
    history.gate = None
    await settle(fanout)
    fanout.deliver_all({CHANNEL: history.commit(5)})  # live again
    assert sequences(socket.received()) == [1, 2, 3, 4, 5]
    assert server.disconnected == []


async def test_commit_announced_while_last_read_was_in_flight_is_read_again(
    fanout, server, history
):
    history.commit(1)
    socket = attach(fanout, server, "a", cursor=1, head=1)
    history.gate = asyncio.Event()
    await asyncio.sleep(0.01)  # replay's read found nothing after 1 and is held
    fanout.deliver_all({CHANNEL: history.commit(2)})  # announced after that read's snapshot
    history.gate.set()
    history.gate = None
    await settle(fanout)
    assert sequences(socket.received()) == [2]
    assert server.disconnected == []


async def test_out_of_order_announcements_fall_back_to_history(fanout, server, history):
    socket = attach(fanout, server, "a", cursor=0, head=0)
    await settle(fanout)
    two = history.commit(1, 2)
    fanout.deliver_all({CHANNEL: [two[1]]})  # 2 announced before 1: a gap
    fanout.deliver_all({CHANNEL: [two[0]]})
    await settle(fanout)
    assert sequences(socket.received()) == [1, 2]
    assert server.disconnected == []


async def test_already_delivered_sequences_are_not_written_twice(fanout, server, history):
    socket = attach(fanout, server, "a", cursor=0, head=0)
    await settle(fanout)
    entries = history.commit(1, 2)
    fanout.deliver_all({CHANNEL: entries})
    fanout.deliver_all({CHANNEL: entries})
    assert sequences(socket.received()) == [1, 2]


async def test_each_socket_of_a_channel_has_its_own_cursor(fanout, server, history):
    history.commit(1, 2, 3)
    behind = attach(fanout, server, "a", cursor=0, head=3)
    ahead = attach(fanout, server, "b", cursor=3, head=3)
    await settle(fanout)
    fanout.deliver_all({CHANNEL: history.commit(4)})
    assert sequences(behind.received()) == [1, 2, 3, 4]
    assert sequences(ahead.received()) == [4]


async def test_history_gap_disconnects_instead_of_skipping(fanout, server, history):
    history.commit(5, 6)  # 1..4 pruned
    attach(fanout, server, "a", cursor=2, head=6)
    await asyncio.sleep(0.05)
    assert server.disconnected == ["a"]


async def test_positions_follow_writes_and_confirmations_never_pass_them(fanout, server, history):
    history.commit(1, 2, 3)
    attach(fanout, server, "a", cursor=0, head=3)
    await settle(fanout)
    fanout.confirm("a", CHANNEL, 2)
    fanout.confirm("a", CHANNEL, 99)  # cannot confirm what was never written
    assert fanout.take_positions(CHANNEL) == {CHANNEL: (3, 3)}
    assert fanout.take_positions() == {}


async def test_an_ack_read_off_a_connection_confirms_only_its_own_socket(fanout, server, history):
    history.commit(1, 2, 3)
    attach(fanout, server, "a", cursor=0, head=3)
    await settle(fanout)

    assert fanout.confirm_connection("eio-a", CHANNEL, 2)
    assert not fanout.confirm_connection("eio-b", CHANNEL, 3)  # not on this channel
    assert not fanout.confirm_connection("eio-a", "chan_other", 3)
    assert fanout.take_positions(CHANNEL) == {CHANNEL: (3, 2)}

    assert fanout.confirm_connection("eio-a", CHANNEL, 99)  # never past what was written
    assert fanout.take_positions(CHANNEL) == {CHANNEL: (None, 3)}

    fanout.detach("a", CHANNEL)
    assert not fanout.confirm_connection("eio-a", CHANNEL, 3)
    assert fanout.take_positions() == {}


async def test_detach_reports_the_last_socket_and_stops_its_replay(fanout, server, history):
    history.gate = asyncio.Event()
    history.commit(1)
    attach(fanout, server, "a", cursor=0, head=1)
    attach(fanout, server, "b", cursor=0, head=1)
    assert fanout.detach("a", CHANNEL) is False
    assert fanout.detach("b", CHANNEL) is True
    assert not fanout.has_subscribers(CHANNEL)
    history.gate.set()


async def test_close_tells_sockets_then_disconnects_and_refuses_late_joiners(
    fanout, server, history
):
    socket = attach(fanout, server, "a", cursor=0, head=0)
    await settle(fanout)
    await fanout.close(CHANNEL, message_packet(CHANNEL, "channel_closed", {"channel_id": CHANNEL}))
    assert socket.received()[-1] == ("channel_closed", {"channel_id": CHANNEL})
    assert server.disconnected == ["a"]
    assert fanout.is_closed(CHANNEL)


async def test_write_to_a_closed_socket_does_not_advance_its_cursor(fanout, server, history):
    socket = attach(fanout, server, "a", cursor=0, head=0)
    await settle(fanout)
    socket.closed = True
    fanout.deliver_all({CHANNEL: history.commit(1)})
    assert fanout.subscriber("a", CHANNEL).cursor == 0  # type: ignore[union-attr]
