"""The lean Engine.IO websocket transport is plugged in, and channel acks take its fast path."""

from __future__ import annotations

from types import SimpleNamespace

from engineio.async_drivers import asgi as asgi_driver

from realtime.engine import LeanWebSocket
from realtime.server import create_socket_server


def test_the_server_uses_the_lean_websocket_without_changing_the_shared_driver() -> None:
    server = create_socket_server()
    assert server.eio._async["websocket"] is LeanWebSocket
    assert asgi_driver._async["websocket"] is asgi_driver.WebSocket


async def test_a_channel_ack_frame_confirms_the_sequence_without_python_socketio() -> None:
    server = create_socket_server()
    acks: list[tuple[str, str, int]] = []
    server.on_sequence_ack = lambda sid, channel, sequence: acks.append((sid, channel, sequence))
    sid = await server.manager.connect("eio_1", "/channels/chan_abc")
    socket = SimpleNamespace(sid="eio_1")

    assert server._channel_ack_frame(socket, "43/channels/chan_abc,17[]")
    assert acks == [(sid, "chan_abc", 17)]


async def test_other_frames_are_left_to_python_socketio() -> None:
    server = create_socket_server()
    acks: list[tuple[str, str, int]] = []
    server.on_sequence_ack = lambda sid, channel, sequence: acks.append((sid, channel, sequence))
    await server.manager.connect("eio_1", "/channels/chan_abc")
    socket = SimpleNamespace(sid="eio_1")

    for frame in (
        '42/channels/chan_abc,["ack",{"sequence":3}]',  # the `ack` event: python-socketio's
        "43/channels/chan_abc,x[]",  # malformed ack id
        "43/other,1[]",
        "2",  # ping
    ):
        assert not server._channel_ack_frame(socket, frame), frame
    assert acks == []


def test_an_ack_from_a_socket_not_on_that_channel_is_dropped() -> None:
    server = create_socket_server()
    acks: list[tuple[str, str, int]] = []
    server.on_sequence_ack = lambda sid, channel, sequence: acks.append((sid, channel, sequence))
    socket = SimpleNamespace(sid="eio_unknown")

    assert server._channel_ack_frame(socket, "43/channels/chan_abc,5[]")
    assert acks == []
