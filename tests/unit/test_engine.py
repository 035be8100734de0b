"""The lean Engine.IO websocket transport is plugged in, and channel acks take its fast path."""

from __future__ import annotations

from types import SimpleNamespace

from engineio.async_drivers import asgi as asgi_driver

from claims_realtime.realtime.engine import LeanWebSocket
from claims_realtime.realtime.server import ChannelSocketServer, create_socket_server

Ack = tuple[str, str, int]


def test_the_server_uses_the_lean_websocket_without_changing_the_shared_driver() -> None:
    server = create_socket_server()
    assert server.eio._async["websocket"] is LeanWebSocket
    assert asgi_driver._async["websocket"] is asgi_driver.WebSocket


def recording_acks(server: ChannelSocketServer, attached: set[tuple[str, str]]) -> list[Ack]:
    """Acks the fast path hands on, as (eio_sid, channel, sequence); only connections in
    `attached` (eio_sid, channel) are on their channel."""
    acks: list[Ack] = []

    def confirm(eio_sid: str, channel: str, sequence: int) -> bool:
        if (eio_sid, channel) not in attached:
            return False
        acks.append((eio_sid, channel, sequence))
        return True

    server.on_connection_ack = confirm
    return acks


async def test_a_channel_ack_frame_confirms_the_sequence_without_python_socketio() -> None:
    server = create_socket_server()
    acks = recording_acks(server, {("eio_1", "chan_abc")})
    socket = SimpleNamespace(sid="eio_1")

    assert server._channel_ack_frame(socket, "43/channels/chan_abc,17[]")
    assert acks == [("eio_1", "chan_abc", 17)]


async def test_other_frames_are_left_to_python_socketio() -> None:
    server = create_socket_server()
    acks = recording_acks(server, {("eio_1", "chan_abc")})
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
    acks = recording_acks(server, {("eio_1", "chan_abc")})
    socket = SimpleNamespace(sid="eio_unknown")

    assert server._channel_ack_frame(socket, "43/channels/chan_abc,5[]")
    assert acks == []
