"""The Socket.IO server: python-socketio with every channel namespace accepted dynamically."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import socketio

from realtime.engine import LeanEngineServer
from realtime.protocol import channel_id_of

#: An Engine.IO MESSAGE frame carrying a Socket.IO ACK on a channel namespace:
#: `43/channels/<id>,<ack id>[<args>]`.
_CHANNEL_ACK = re.compile(r"43/channels/(chan_[a-z0-9]{1,64}),(\d{1,18})\[")


class ChannelSocketServer(socketio.AsyncServer):
    """An AsyncServer whose channel namespaces treat ack ids as sequences.

    Events are encoded once per channel (realtime.protocol) with the event's sequence as the
    Socket.IO ack id, so a client's ack callback confirms that sequence. python-socketio
    would look such ids up in its per-socket callback table, find nothing and drop them.
    """

    #: Called as (sid, channel_id, sequence) for an ack on a channel namespace.
    on_sequence_ack: Callable[[str, str, int], None] | None = None
    #: Called as (sid, namespace) once a client's namespace CONNECT has been queued.
    on_namespace_connected: Callable[[str, str], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eio.frame_hook = self._channel_ack_frame

    def _engineio_server_class(self) -> type[LeanEngineServer]:
        return LeanEngineServer

    def _channel_ack_frame(self, socket: Any, frame: str) -> bool:
        """Take a websocket frame that acks a channel event, straight from the transport.

        Every delivered event comes back as an ACK: python-socketio would start a task for
        it and parse it with its general decoder (json.loads of arguments we ignore), which
        cost more than sending the event. Anything else is left to python-socketio.
        """
        if self.on_sequence_ack is None or not frame.startswith("43/channels/"):
            return False
        match = _CHANNEL_ACK.match(frame)
        if match is None or socket.sid in self._binary_packet:
            return False
        channel_id, sequence = match.group(1), int(match.group(2))
        sid = self.manager.sid_from_eio_sid(socket.sid, "/channels/" + channel_id)
        if sid is not None:
            self.on_sequence_ack(sid, channel_id, sequence)
        return True

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        # python-socketio runs the connect handler, then queues CONNECT (or CONNECT_ERROR):
        # only after that may anything else be written to the namespace.
        await super()._handle_connect(eio_sid, namespace, data)
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if (
            sid is not None
            and self.on_namespace_connected is not None
            and self.manager.is_connected(sid, namespace)
        ):
            self.on_namespace_connected(sid, namespace)

    async def _handle_ack(self, eio_sid: str, namespace: str | None, id: int, data: Any) -> None:
        namespace = namespace or "/"
        channel_id = channel_id_of(namespace)
        if channel_id is None or self.on_sequence_ack is None:
            await super()._handle_ack(eio_sid, namespace, id, data)
            return
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is not None and isinstance(id, int):
            self.on_sequence_ack(sid, channel_id, id)


def create_socket_server(
    *, cors_allowed_origins: list[str] | str | Callable[..., bool] | None = None
) -> ChannelSocketServer:
    # namespaces="*" lets clients open `/channels/<id>` namespaces created at run time; the
    # connect handler decides which exist. always_connect=False sends CONNECT only after
    # that handler accepted, so a refused client sees `connect_error` with our reason.
    return ChannelSocketServer(
        async_mode="asgi",
        namespaces="*",
        always_connect=False,
        cors_allowed_origins=cors_allowed_origins,
        logger=False,
        engineio_logger=False,
    )
