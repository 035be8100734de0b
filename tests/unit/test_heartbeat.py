"""The Engine.IO heartbeat of adopted sessions (realtime.engine_socket, realtime.engine): a
PING by timer, written straight to a websocket our writer serves, and a PONG taken by the
frame hook before it reaches the reader, still a sign of life for the reader's deadline."""

from __future__ import annotations

import argparse
import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from engineio import packet as eio_packet
from uvicorn import Config

from claims_realtime import cli
from claims_realtime.realtime.engine import Wire
from claims_realtime.realtime.engine_socket import ChannelEngineSocket
from claims_realtime.realtime.server import ChannelSocketServer, create_socket_server
from claims_realtime.settings import Settings

INTERVAL = 0.05


class Line:
    """A stand-in DirectLine: writes frames while `open`."""

    def __init__(self, open: bool) -> None:
        self.open = open
        self.written: list[str] = []

    def write(self, frame: str) -> bool:
        if self.open:
            self.written.append(frame)
        return self.open


def served(server: ChannelSocketServer, line: Line | None) -> tuple[ChannelEngineSocket, Wire]:
    """A session whose websocket our reader and writer serve (`line` None: no direct line)."""
    socket = ChannelEngineSocket(server.eio, "s")
    server.eio.sockets["s"] = socket
    wire = server.eio.wires["s"] = Wire(socket, line)  # type: ignore[arg-type]
    return socket, wire


def when(deadline: asyncio.Timeout) -> float:
    moment = deadline.when()
    assert moment is not None
    return moment


def queued(socket: ChannelEngineSocket) -> list[Any]:
    packets = []
    while not socket.queue.empty():
        packets.append(socket.queue.get_nowait())
    return packets


async def test_a_ping_goes_straight_to_the_websocket_a_ping_interval_later_without_a_task() -> None:
    server = create_socket_server(ping_interval=INTERVAL)
    line = Line(open=True)
    socket, _ = served(server, line)
    tasks = asyncio.all_tasks()

    socket.schedule_ping()
    assert asyncio.all_tasks() == tasks  # nothing waits a ping interval in a coroutine
    assert socket.last_ping is None  # a cycle is under way
    await asyncio.sleep(INTERVAL / 2)
    assert line.written == []
    await asyncio.sleep(INTERVAL * 2)

    assert line.written == ["2"]
    assert socket.last_ping is not None  # python-engineio's deadline for the PONG runs
    assert queued(socket) == []


@pytest.mark.parametrize("line", [Line(open=False), None], ids=["line pushing back", "no line"])
async def test_a_ping_the_line_cannot_take_is_queued(line: Line | None) -> None:
    server = create_socket_server(ping_interval=INTERVAL)
    socket, _ = served(server, line)

    socket.schedule_ping()
    await asyncio.sleep(INTERVAL * 3)

    assert [(p.packet_type, p.data) for p in queued(socket)] == [(eio_packet.PING, None)]


async def test_a_long_polling_session_gets_its_ping_through_the_queue() -> None:
    server = create_socket_server(ping_interval=INTERVAL)
    socket = ChannelEngineSocket(server.eio, "p")
    server.eio.sockets["p"] = socket  # no wire: not a websocket our writer serves

    socket.schedule_ping()
    await asyncio.sleep(INTERVAL * 3)

    assert [p.packet_type for p in queued(socket)] == [eio_packet.PING]


async def test_one_ping_per_cycle_and_none_to_a_closed_session() -> None:
    server = create_socket_server(ping_interval=INTERVAL)
    line = Line(open=True)
    socket, _ = served(server, line)

    socket.schedule_ping()
    socket.schedule_ping()  # no PONG came in between: python-engineio's rule, no second timer
    await asyncio.sleep(INTERVAL * 3)
    assert line.written == ["2"]

    socket.schedule_ping()  # as if its PONG came
    socket.closed = True
    await asyncio.sleep(INTERVAL * 3)
    assert line.written == ["2"] and queued(socket) == []


async def test_a_pong_taken_by_the_hook_schedules_the_next_ping_and_moves_the_deadline() -> None:
    server = create_socket_server(ping_interval=INTERVAL, ping_timeout=INTERVAL)
    line = Line(open=True)
    socket, wire = served(server, line)
    loop = asyncio.get_running_loop()
    assert server.eio.frame_hook is not None
    socket.last_ping = 1.0  # a PING was sent

    async with asyncio.timeout_at(loop.time() + 60) as deadline:
        wire.deadline, wire.silence, wire.step = deadline, 60.0, 0.0
        assert server.eio.frame_hook(socket, "3")

        assert when(deadline) == pytest.approx(loop.time() + 60, abs=1)
        moved = when(deadline)
        assert socket.last_ping is None  # its PING's deadline is met
        await asyncio.sleep(INTERVAL * 3)
        assert line.written == ["2"]  # the next one
        assert server.eio.frame_hook(socket, "3")
        assert when(deadline) > moved


async def test_the_hook_leaves_a_pong_of_a_session_our_reader_does_not_serve() -> None:
    server = create_socket_server()
    socket = ChannelEngineSocket(server.eio, "p")
    server.eio.sockets["p"] = socket
    assert server.eio.frame_hook is not None

    assert not server.eio.frame_hook(socket, "3")  # python-engineio's receive() has it
    assert not server.eio.frame_hook(socket, "3probe")


async def test_the_deadline_moves_at_most_once_a_step_and_never_after_a_cut() -> None:
    server = create_socket_server()
    socket, wire = served(server, Line(open=True))
    loop = asyncio.get_running_loop()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout_at(loop.time() + 60) as deadline:
            wire.deadline, wire.silence, wire.step = deadline, 120.0, 30.0
            wire.moved = loop.time()
            wire.heard()  # within the step: not worth a new timer
            assert when(deadline) == pytest.approx(loop.time() + 60, abs=1)
            wire.moved -= 30
            wire.heard()
            assert when(deadline) == pytest.approx(loop.time() + 120, abs=1)

            wire.cut()
            wire.moved -= 30
            wire.heard()
            assert when(deadline) <= loop.time()  # stays where the cut put it
            await asyncio.sleep(1)


def test_serve_leaves_the_heartbeat_to_engineio() -> None:
    """uvicorn's own websocket pings would double Engine.IO's heartbeat (a frame each way
    and a timer per connection every 20 s): `serve` turns them off."""
    calls: list[dict[str, Any]] = []
    fake_uvicorn = SimpleNamespace(run=lambda *args, **kwargs: calls.append(kwargs))
    args = argparse.Namespace(host="127.0.0.1", port=0, workers=1, graceful_timeout=1.0)
    cli._run_uvicorn(fake_uvicorn, args, Settings.from_env({}))
    config = Config(app=lambda *a: None, **{k: v for k, v in calls[0].items() if k != "factory"})
    assert config.ws_ping_interval is None
