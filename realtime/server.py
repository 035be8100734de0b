"""The Socket.IO server: python-socketio with every channel namespace accepted dynamically."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import socketio

from claims_realtime.realtime.engine import LeanEngineServer
from claims_realtime.realtime.fastpaths import FastPath
from claims_realtime.realtime.lean import LeanTransport
from claims_realtime.realtime.limits import Misbehaviour
from claims_realtime.realtime.protocol import channel_id_of
from claims_realtime.realtime.sockets import StockTransport, Transport

log = logging.getLogger(__name__)

#: An Engine.IO MESSAGE frame carrying a Socket.IO ACK on a channel namespace:
#: `43/channels/<id>,<ack id>[<args>]` (ASCII digits: `\d` would take any Unicode digit).
_CHANNEL_ACK = re.compile(r"43/channels/(chan_[a-z0-9]{1,64}),([0-9]{1,18})\[")
#: An Engine.IO PONG, the client's answer to each PING.
_PONG_FRAME = "3"

#: The events a client may emit on a channel namespace (the AsyncAPI document's `ack`).
#: Anything else, `connect` and `disconnect` included, would otherwise reach the namespace
#: class as a call of its `on_<event>` method with the client's arguments.
CLIENT_EVENTS = frozenset({"ack"})

#: Largest Engine.IO packet (or long-polling POST body) a client may send, in bytes.
#: Clients only ever send a CONNECT with `auth {token, last_sequence}` (~100 bytes), acks
#: (~40 bytes) and pings; a long-polling client batches its acks, so allow a thousand of
#: those. python-engineio's default (1 MB) let one client make the server parse and hold
#: a megabyte per frame.
MAX_CLIENT_PACKET_BYTES = 64 * 1024

#: `_channel_ack_frame` reads Socket.IO ack frames itself, before python-socketio: it must
#: agree with python-socketio's packet handling (and its binary-packet state).
ACK_FRAMES = FastPath(
    "the channel ack frame hook (realtime.server)",
    "python-socketio",
    "5.18",
    relies_on=(
        (socketio.AsyncServer, "_binary_packet"),
        (socketio.AsyncServer, "_handle_eio_message"),
        (socketio.AsyncServer, "_handle_ack"),
    ),
)


class ChannelSocketServer(socketio.AsyncServer):
    """An AsyncServer whose channel namespaces treat ack ids as sequences.

    Events are encoded once per channel (realtime.protocol) with the event's sequence as the
    Socket.IO ack id, so a client's ack callback confirms that sequence. python-socketio
    would look such ids up in its per-socket callback table, find nothing and drop them.
    """

    #: Called as (sid, channel_id, sequence) for an ack on a channel namespace.
    on_sequence_ack: Callable[[str, str, int], None] | None = None
    #: The same for an ack frame taken straight from the transport, called as (eio_sid,
    #: channel_id, sequence); False when that connection is not on that channel.
    on_connection_ack: Callable[[str, str, int], bool] | None = None
    #: Called as (sid, namespace) once a client's namespace CONNECT has been queued.
    on_namespace_connected: Callable[[str, str], None] | None = None

    def __init__(self, *args: Any, fast_paths: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # FAST_PATHS=off: every frame takes python-socketio's path, every write the queue.
        self.eio.shortcuts = fast_paths
        if fast_paths and self.eio.adopts_sockets and ACK_FRAMES.check():
            self.eio.frame_hook = self._channel_ack_frame
        #: What each connection did wrong, logged once per connection (eio sid): one
        #: record with the Engine.IO layer's, so a connection is named once in all.
        self.misbehaviour: Misbehaviour = self.eio.misbehaviour
        #: How fan-out writes to the sessions and drops them (realtime.sockets).
        self.transport: Transport = choose_transport(self, fast_paths)
        #: Connections that have not joined a namespace yet, and when that is too late.
        self._join_deadlines: dict[str, asyncio.TimerHandle] = {}

    @property
    def join_timeout(self) -> float:
        """How long a connection may stay without a namespace: the heartbeat's deadline,
        like the reference server's connectTimeout (45 s by default)."""
        return float(self.eio.ping_interval + self.eio.ping_timeout)

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        loop = asyncio.get_running_loop()
        self._join_deadlines[eio_sid] = loop.call_later(
            self.join_timeout, lambda: loop.create_task(self._close_unjoined(eio_sid))
        )
        return result

    async def _close_unjoined(self, eio_sid: str) -> None:
        """An Engine.IO session that never connected to a namespace holds a socket and a
        descriptor for nothing (a heartbeat alone keeps it alive): end it."""
        self._join_deadlines.pop(eio_sid, None)
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closing or socket.closed:
            return
        log.info("connection %s joined no namespace within %.0f s", eio_sid, self.join_timeout)
        await self._end_connection(socket)

    def _engineio_server_class(self) -> type[LeanEngineServer]:
        return LeanEngineServer

    def _channel_ack_frame(self, socket: Any, frame: str) -> bool:
        """Take a websocket frame that acks a channel event, or the heartbeat's PONG,
        straight from the transport.

        Every delivered event comes back as an ACK: python-socketio would start a task for
        it and parse it with its general decoder (json.loads of arguments we ignore), which
        cost more than sending the event. A PONG goes to the Engine.IO server's `take_pong`
        without waking the connection's reader. Anything else is left to python-socketio.
        """
        match = _CHANNEL_ACK.match(frame)
        if match is None:
            return frame == _PONG_FRAME and self.eio.take_pong(socket)
        confirm = self.on_connection_ack
        if confirm is None or socket.sid in self._binary_packet:
            return False
        channel_id = match[1]
        if not confirm(socket.sid, channel_id, int(match[2])):
            # not attached to that channel: never confirm on someone else's behalf
            self.misbehaviour.note(socket.sid, "acked on %s before connecting", channel_id)
        return True

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """Every Socket.IO packet that is not a channel ack: malformed ones close the
        connection (no Socket.IO client sends them), logged once."""
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closing or socket.closed:
            return  # frames that were in flight when we closed the connection
        if not isinstance(data, str) or data[:1] in ("5", "6"):
            # Binary packets: our protocol has none, and python-socketio would hold a
            # packet (and its attachments) until the count its header claims arrived.
            await self._drop_connection(eio_sid, "a binary Socket.IO packet")
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:  # python-socketio's decoder raises ValueError and others
            await self._drop_connection(eio_sid, f"an undecodable Socket.IO packet ({exc!r:.80})")

    async def _drop_connection(self, eio_sid: str, what: str) -> None:
        self.misbehaviour.note(eio_sid, "sent %s; closing the connection", what)
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None:
            await self._end_connection(socket)

    async def _end_connection(self, socket: Any) -> None:
        await socket.close(wait=False, abort=True, reason=self.eio.reason.SERVER_DISCONNECT)
        # An aborted close sends nothing: wake the websocket writer so that it ends the
        # connection (a polling socket's next poll just comes back empty).
        await socket.queue.put(None)

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: Any
    ) -> None:
        namespace = namespace or "/"
        event = data[0] if isinstance(data, list) and data else None
        if not isinstance(event, str):
            # Not `[name, ...args]`: malformed, like any undecodable packet. Only the type
            # is logged, never the payload (a token?).
            await self._drop_connection(
                eio_sid, f"an EVENT whose payload is not [name, ...] (<{type(data).__name__}>)"
            )
            return
        if event not in CLIENT_EVENTS:
            self.misbehaviour.note(
                eio_sid, "sent an unknown event %.80r on %.80s", event, namespace
            )
            return
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            self.misbehaviour.note(
                eio_sid, "sent %s before connecting to %.80s", data[0], namespace
            )
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        deadline = self._join_deadlines.pop(eio_sid, None)
        if deadline is not None:
            deadline.cancel()
        try:
            await super()._handle_eio_disconnect(eio_sid, reason)
        finally:
            self.misbehaviour.forget(eio_sid)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        # python-socketio runs the connect handler, then queues CONNECT (or CONNECT_ERROR):
        # only after that may anything else be written to the namespace.
        await super()._handle_connect(eio_sid, namespace, data)
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is not None and self.manager.is_connected(sid, namespace):
            deadline = self._join_deadlines.pop(eio_sid, None)
            if deadline is not None:
                deadline.cancel()
            if self.on_namespace_connected is not None:
                self.on_namespace_connected(sid, namespace)

    async def _handle_ack(self, eio_sid: str, namespace: str | None, id: int, data: Any) -> None:
        namespace = namespace or "/"
        channel_id = channel_id_of(namespace)
        if self.on_sequence_ack is None:
            await super()._handle_ack(eio_sid, namespace, id, data)
            return
        if channel_id is None:
            # The server never asks a client for an ack outside channel namespaces.
            self.misbehaviour.note(eio_sid, "sent an ack on %.80s", namespace)
            return
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None:
            self.misbehaviour.note(eio_sid, "acked before connecting to %.80s", namespace)
        elif not isinstance(data, list) or not isinstance(id, int) or isinstance(id, bool):
            # Not what a Socket.IO client sends (`<id>[...]`); the fast path above takes
            # well-formed ones without reading their arguments.
            self.misbehaviour.note(eio_sid, "sent a malformed ack %.40r on %.80s", data, namespace)
        else:
            self.on_sequence_ack(sid, channel_id, id)


def choose_transport(sio: ChannelSocketServer, fast_paths: bool) -> Transport:
    """The lean transport (direct writes) where our reader and writer serve websockets and
    FAST_PATHS is on; python-engineio's queue for every packet otherwise. Both cut a slow
    consumer's websocket through the engine server, which does so wherever our reader serves
    it (with FAST_PATHS off too: python-engineio's handler has no way to)."""
    eio = sio.eio
    if fast_paths and eio.adopts_sockets:
        return LeanTransport(sio, eio.wires, eio.cut)
    return StockTransport(sio, eio.cut)


def create_socket_server(
    *,
    cors_allowed_origins: list[str] | str | Callable[..., bool] | None = None,
    ping_interval: float = 25.0,
    ping_timeout: float = 20.0,
    fast_paths: bool = True,
) -> ChannelSocketServer:
    # namespaces="*" lets clients open `/channels/<id>` namespaces created at run time; the
    # connect handler decides which exist. always_connect=False sends CONNECT only after
    # that handler accepted, so a refused client sees `connect_error` with our reason.
    return ChannelSocketServer(
        async_mode="asgi",
        namespaces="*",
        always_connect=False,
        cors_allowed_origins=cors_allowed_origins,
        max_http_buffer_size=MAX_CLIENT_PACKET_BYTES,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        fast_paths=fast_paths,
        logger=False,
        engineio_logger=False,
    )
