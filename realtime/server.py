"""The Socket.IO server: python-socketio with every channel namespace accepted dynamically."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import socketio

from realtime.protocol import channel_id_of

#: A Socket.IO ACK packet on a channel namespace: `3/channels/<id>,<ack id>[<args>]`.
_CHANNEL_ACK = re.compile(r"3/channels/(chan_[a-z0-9]{1,64}),(\d{1,18})\[")


class ChannelSocketServer(socketio.AsyncServer):
    """An AsyncServer whose channel namespaces treat ack ids as sequences.

    Events are encoded once per channel (realtime.protocol) with the event's sequence as the
    Socket.IO ack id, so a client's ack callback confirms that sequence. python-socketio
    would look such ids up in its per-socket callback table, find nothing and drop them.
    """

    #: Called as (sid, channel_id, sequence) for an ack on a channel namespace.
    on_sequence_ack: Callable[[str, str, int], None] | None = None

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        # Every delivered event comes back as an ACK: parsing those with python-socketio's
        # general packet decoder (and json.loads of their arguments, which we ignore) cost
        # more than sending the event. Recognise them directly; anything else goes the
        # usual way.
        if isinstance(data, str) and eio_sid not in self._binary_packet:
            match = _CHANNEL_ACK.match(data)
            if match is not None and self.on_sequence_ack is not None:
                channel_id, sequence = match.group(1), int(match.group(2))
                sid = self.manager.sid_from_eio_sid(eio_sid, "/channels/" + channel_id)
                if sid is not None:
                    self.on_sequence_ack(sid, channel_id, sequence)
                return
        await super()._handle_eio_message(eio_sid, data)

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
    *, cors_allowed_origins: list[str] | str | None = None
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
