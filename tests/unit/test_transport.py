"""Our uvicorn websocket protocol (realtime.transport) against a real websockets client
protocol: hooked frames skip the application but never overtake what it has not read yet,
and direct writes are well-formed frames that stop when the transport pushes back."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from claims_realtime import cli
from claims_realtime.settings import Settings
from realtime.engine import DirectLine
from realtime.transport import ChannelWebSocketProtocol


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """One accepted websocket: our protocol on the server side, a websockets client on the
    other, and the texts the ASGI application received."""

    def __init__(self, protocol: ChannelWebSocketProtocol, transport: FakeTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.client = ClientProtocol(parse_uri("ws://127.0.0.1:8080/"))
        self.app_received: list[str] = []
        self._read = 0

    def client_sends(self, *texts: str) -> None:
        """The client's frames reach the server in one read, as on a busy connection."""
        for text in texts:
            self.client.send_text(text.encode())
        self.protocol.data_received(b"".join(self.client.data_to_send()))

    def client_receives(self) -> list[str]:
        self.client.receive_data(bytes(self.transport.written[self._read :]))
        self._read = len(self.transport.written)
        return [
            event.data.decode()
            for event in self.client.events_received()
            if isinstance(event, Frame) and event.opcode == Opcode.TEXT
        ]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def connection() -> AsyncIterator[Connection]:
    holder: dict[str, Connection] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            holder["connection"].app_received.append(message["text"])

    config = Config(app=app, ws="realtime.transport:ChannelWebSocketProtocol", lifespan="off")
    config.load()
    assert config.ws_protocol_class is ChannelWebSocketProtocol
    protocol = ChannelWebSocketProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    connection = holder["connection"] = Connection(protocol, transport)
    connection.client.send_request(connection.client.connect())
    protocol.data_received(b"".join(connection.client.data_to_send()))
    await settle()
    assert connection.client_receives() == []  # the handshake response
    assert protocol.handshake_complete
    yield connection
    protocol.connection_lost(None)
    await settle()


async def test_hooked_frames_skip_the_application(connection: Connection) -> None:
    taken: list[str] = []
    connection.protocol.frame_hook = lambda text: text.startswith("ack") and not taken.append(text)
    connection.client_sends("ack 1")
    connection.client_sends("hello")
    await settle()
    assert taken == ["ack 1"]
    assert connection.app_received == ["hello"]


async def test_a_hooked_frame_never_overtakes_one_the_application_has_not_read(
    connection: Connection,
) -> None:
    taken: list[str] = []
    connection.protocol.frame_hook = lambda text: text.startswith("ack") and not taken.append(text)
    connection.client_sends("hello", "ack 2")  # "hello" is still queued when "ack 2" arrives
    await settle()
    assert taken == []
    assert connection.app_received == ["hello", "ack 2"]


async def test_send_now_writes_a_frame_unless_the_transport_pushes_back(
    connection: Connection,
) -> None:
    protocol = connection.protocol
    assert protocol.send_now("4first")
    assert connection.client_receives() == ["4first"]

    protocol.pause_writing()  # the peer stopped reading: the caller must queue
    assert not protocol.send_now("4second")
    protocol.resume_writing()
    assert protocol.send_now("4second")
    assert connection.client_receives() == ["4second"]

    connection.transport.closing = True
    assert not protocol.send_now("4third")
    assert connection.client_receives() == []


@pytest.mark.parametrize("size", [1, 125, 126, 127, 65535, 65536, 100_000])
async def test_send_now_frames_every_payload_size_as_websockets_does(
    connection: Connection, size: int
) -> None:
    """Around each of the header's length encodings (7, 16 and 64 bits), in UTF-8 bytes."""
    text = "4" + "é" * ((size - 1) // 2) + "x" * ((size - 1) % 2)  # 2-byte characters
    assert len(text.encode()) == size
    assert connection.protocol.send_now(text)
    assert connection.client_receives() == [text]


async def test_send_now_never_writes_a_frame_once_websockets_is_closing(
    connection: Connection,
) -> None:
    # websockets failed the connection (a protocol error: it queued a close frame) before
    # uvicorn noticed: no data frame may follow the close.
    conn = connection.protocol.conn
    conn.fail(1002, "protocol error")
    connection.transport.write(b"".join(conn.data_to_send()))  # the close frame went out
    before = len(connection.transport.written)
    with contextlib.suppress(Exception):  # websockets refuses: the connection is closing
        connection.protocol.send_now("4late")
    assert b"4late" not in connection.transport.written[before:]


async def test_the_direct_line_yields_to_anything_queued_or_in_the_writers_hands(
    connection: Connection,
) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    line = DirectLine(connection.protocol, queue)
    assert line.send('2["x"]')
    assert connection.client_receives() == ['42["x"]']  # an Engine.IO MESSAGE

    queue.put_nowait("queued before")
    assert not line.send('2["y"]')
    queue.get_nowait()
    line.busy = True
    assert not line.send('2["y"]')
    line.busy = False
    assert line.send('2["y"]')
    assert connection.client_receives() == ['42["y"]']


def test_serve_runs_uvicorn_with_this_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """`claims-realtime serve` is what gets the shortcuts: check what it asks uvicorn for."""
    calls: list[dict[str, Any]] = []
    fake_uvicorn = SimpleNamespace(run=lambda *args, **kwargs: calls.append(kwargs))
    args = argparse.Namespace(host="127.0.0.1", port=0, workers=1, graceful_timeout=1.0)
    cli._run_uvicorn(fake_uvicorn, args, Settings.from_env({}))
    assert len(calls) == 1
    config = Config(app=lambda *a: None, ws=calls[0]["ws"])
    config.load()
    assert config.ws_protocol_class is ChannelWebSocketProtocol
