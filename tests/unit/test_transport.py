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
from claims_realtime.realtime.engine import DirectLine
from claims_realtime.realtime.transport import ChannelWebSocketProtocol
from claims_realtime.settings import Settings
from tests.fake_transport import FakeTransport


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
        return [
            frame.data.decode()
            for frame in self.client_receives_frames()
            if frame.opcode == Opcode.TEXT
        ]

    def client_receives_frames(self) -> list[Frame]:
        self.client.receive_data(bytes(self.transport.written[self._read :]))
        self._read = len(self.transport.written)
        return [event for event in self.client.events_received() if isinstance(event, Frame)]


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

    config = Config(
        app=app, ws="claims_realtime.realtime.transport:ChannelWebSocketProtocol", lifespan="off"
    )
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


def hooked_acks(connection: Connection) -> list[str]:
    """Make the connection's hook take texts starting with "ack"; answer what it took."""
    taken: list[str] = []
    connection.protocol.frame_hook = lambda text: text.startswith("ack") and not taken.append(text)
    return taken


def parsed_by_websockets(connection: Connection) -> list[bytes]:
    """Record the reads that reach websockets' parser."""
    reads: list[bytes] = []
    conn = connection.protocol.conn
    receive_data = conn.receive_data

    def recording(data: bytes) -> None:
        reads.append(bytes(data))
        receive_data(data)

    conn.receive_data = recording  # type: ignore[method-assign]
    return reads


def client_frames(connection: Connection, *texts: str) -> bytes:
    for text in texts:
        connection.client.send_text(text.encode())
    return b"".join(connection.client.data_to_send())


async def test_a_read_of_whole_ack_frames_never_reaches_websockets_parser(
    connection: Connection,
) -> None:
    taken = hooked_acks(connection)
    reads = parsed_by_websockets(connection)
    connection.client_sends("ack 1", "ack 2", "ack é" + "x" * 118)  # 124 bytes of UTF-8
    assert taken == ["ack 1", "ack 2", "ack é" + "x" * 118]
    assert reads == []
    # websockets still parses what follows from the right place.
    connection.client_sends("hello")
    await settle()
    assert connection.app_received == ["hello"]


async def test_frames_after_one_the_hook_declines_go_through_websockets_in_order(
    connection: Connection,
) -> None:
    taken = hooked_acks(connection)
    reads = parsed_by_websockets(connection)
    data = client_frames(connection, "ack 1", "hello", "ack 2")
    connection.protocol.data_received(data)
    await settle()
    assert taken == ["ack 1"]  # "ack 2" came behind "hello", still queued for the app
    assert connection.app_received == ["hello", "ack 2"]
    assert reads == [data[6 + len("ack 1") :]]  # from the first frame it did not take


async def test_a_frame_cut_by_the_read_is_parsed_by_websockets_and_the_next_read_resumes(
    connection: Connection,
) -> None:
    taken = hooked_acks(connection)
    data = client_frames(connection, "ack 1", "ack 2", "ack 3")
    cut = len(data) - 4  # inside "ack 3"
    connection.protocol.data_received(data[:cut])
    assert taken == ["ack 1", "ack 2"]
    connection.protocol.data_received(data[cut:])
    assert taken == ["ack 1", "ack 2", "ack 3"]
    reads = parsed_by_websockets(connection)
    connection.client_sends("ack 4")  # websockets is back at a frame boundary
    assert taken == ["ack 1", "ack 2", "ack 3", "ack 4"]
    assert reads == []


async def test_a_read_inside_a_frame_is_never_taken_for_the_start_of_one(
    connection: Connection,
) -> None:
    """websockets holds a frame's header and waits for its mask: the next read starts with
    bytes that also look like a whole ack frame. They are the rest of the first frame."""
    taken = hooked_acks(connection)
    mask = bytes((0x81, 0x83, 0, 0))  # reads as a text frame header, length 3
    text = "hiac\x03!!"
    # Its masked bytes 2..4 unmask, with mask bytes 2..5 of the read, to "ack".
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text.encode()))
    connection.protocol.data_received(bytes((0x81, 0x80 | len(text))))
    connection.protocol.data_received(mask + masked)
    await settle()
    assert taken == []
    assert connection.app_received == [text]


async def test_a_read_inside_a_frame_after_taken_acks_is_never_taken_either(
    connection: Connection,
) -> None:
    """Once a read of acks was taken whole, the parser is known to be idle; the next read
    that reaches it (here a frame's header alone) means it no longer is."""
    taken = hooked_acks(connection)
    connection.client_sends("ack 1")
    mask = bytes((0x81, 0x83, 0, 0))
    text = "hiac\x03!!"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text.encode()))
    connection.protocol.data_received(bytes((0x81, 0x80 | len(text))))
    connection.protocol.data_received(mask + masked)
    await settle()
    assert taken == ["ack 1"]
    assert connection.app_received == [text]


@pytest.mark.parametrize("length", [20, 300])  # read here, and parsed by websockets
async def test_a_frame_longer_than_the_limit_goes_to_the_application(
    connection: Connection, length: int
) -> None:
    taken = hooked_acks(connection)
    connection.protocol.frame_limit = length - 1
    connection.client_sends("ack " + "x" * (length - 4))
    await settle()  # read by the application: a later frame may skip it again
    connection.client_sends("ack " + "y" * (length - 5))
    assert taken == ["ack " + "y" * (length - 5)]
    assert connection.app_received == ["ack " + "x" * (length - 4)]


async def test_frames_it_does_not_parse_itself_are_websockets_decisions(
    connection: Connection,
) -> None:
    taken = hooked_acks(connection)
    connection.client_sends("ack " + "x" * 122)  # 126 bytes: a 16-bit length
    assert taken == ["ack " + "x" * 122]
    connection.client.send_ping(b"are you there")  # a control frame: websockets answers it
    connection.protocol.data_received(b"".join(connection.client.data_to_send()))
    assert [event.opcode for event in connection.client_receives_frames()] == [Opcode.PONG]
    assert connection.client.state.name == "OPEN"


async def test_an_unmasked_client_frame_still_fails_the_connection(
    connection: Connection,
) -> None:
    taken = hooked_acks(connection)
    connection.protocol.data_received(b"\x81\x05ack 1")  # a client must mask its frames
    await settle()
    assert taken == []
    closes = [
        event for event in connection.client_receives_frames() if event.opcode == Opcode.CLOSE
    ]
    assert closes and closes[0].data[:2] == (1002).to_bytes(2, "big")  # protocol error


async def test_a_text_frame_that_is_not_utf8_is_never_hooked(connection: Connection) -> None:
    taken = hooked_acks(connection)
    reads = parsed_by_websockets(connection)
    connection.client.send_frame(Frame(Opcode.TEXT, b"ack \xff"))
    connection.protocol.data_received(b"".join(connection.client.data_to_send()))
    await settle()
    assert taken == [] and connection.app_received == []
    assert len(reads) == 1  # handed to websockets and uvicorn, as without the shortcut


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
