"""A leaner Engine.IO websocket transport for python-engineio's ASGI server.

python-engineio's own websocket handler pays, for every frame in either direction, a task and
a timer (`asyncio.ensure_future` + `asyncio.wait_for`), and python-socketio then starts one more
task per incoming message. Every event we deliver comes back as an ack frame, so under load
that bookkeeping cost more than the delivery itself (py-spy, 1,000 sockets). This transport
keeps the Engine.IO protocol byte for byte (the same packets, upgrade handshake, ping/pong and
close) and only changes how the frames are waited for:

- the writer drains the socket's queue directly (a plain `await queue.get()` when empty);
- the reader awaits frames under one deadline per connection, moved forward at most once a
  second, instead of a fresh timer per frame;
- a channel ack (`43/channels/<id>,<ack id>[...]`) is handed to the server's hook right there,
  without a task; everything else takes python-engineio's usual path (`socket.receive`);
- under our uvicorn protocol (realtime.transport) acks are taken even earlier, as uvicorn
  parses them, and `DirectLine` lets fan-out (through realtime.lean.LeanTransport) skip the
  queue and the writer task altogether while nothing is queued before it.

Each websocket served here is a `Wire` in `LeanEngineServer.wires` while its reader runs:
its DirectLine, if any, and its deadline, through which `LeanEngineServer.cut` ends it.

Long-polling is python-engineio's code, with the session rules of realtime.engine_socket.

The reader and writer also keep the protocol's rules (the heartbeat deadline, refusing
what is not a client packet, no reading after a CLOSE), which python-engineio's own handler
does not: so they serve whenever python-engineio is the release they were written for
(`FAST_PATH`, else python-engineio's handler throughout), and only the speed parts (the
frame hooks, `DirectLine`) follow FAST_PATHS (`LeanEngineServer.shortcuts`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import engineio
from engineio import async_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as asgi_driver

from claims_realtime.realtime import engine_socket
from claims_realtime.realtime.engine_socket import (
    CLIENT_PACKET_TYPES,
    ChannelEngineSocket,
    allow_payload_packets,
    refuse,
)
from claims_realtime.realtime.fastpaths import FastPath
from claims_realtime.realtime.limits import Misbehaviour

if TYPE_CHECKING:  # only typed here: realtime.transport loads on its uvicorn release only
    from claims_realtime.realtime.transport import ChannelWebSocketProtocol

log = logging.getLogger(__name__)

#: Called with (engine.io socket, frame text); True when it consumed the frame.
FrameHook = Callable[[Any, str], bool]

#: How often, at most, the reader's deadline is moved forward (seconds): precision is not
#: needed against a deadline of ping interval + ping timeout (45 s by default). Never more
#: than a quarter of the ping timeout, or a live client's pong could arrive too late.
_DEADLINE_STEP = 5.0
_PING_FRAME = eio_packet.Packet(eio_packet.PING).encode()
#: Smallest packet a client sends in a long-polling POST batch (an ack is ~25 bytes): how
#: many packets one POST may carry follows from the POST size limit.
_SMALLEST_PACKET_BYTES = 16

#: This module's and realtime.engine_socket's needs of python-engineio, checked as one: on
#: a mismatch both leave every connection to python-engineio (one warning).
FAST_PATH = FastPath(
    "the Engine.IO websocket transport and session rules (realtime.engine, engine_socket)",
    "python-engineio",
    engine_socket.WRITTEN_FOR,
    relies_on=(
        *engine_socket.RELIES_ON,
        (asgi_driver, "_async"),
        *((asgi_driver.WebSocket, name) for name in ("asgi_receive", "asgi_send", "wait")),
        *((asgi_driver.WebSocket, name) for name in ("send", "close")),
        (async_socket.AsyncSocket, "_websocket_handler"),
        *((async_socket.AsyncSocket, name) for name in ("connected", "upgrading", "close")),
        *((engineio.AsyncServer, name) for name in ("_async", "_trigger_event", "sockets")),
        *((engineio.AsyncServer, name) for name in ("max_http_buffer_size", "reason")),
        *((engineio.AsyncServer, name) for name in ("ping_interval", "ping_timeout", "logger")),
    ),
)


class LeanWebSocket(asgi_driver.WebSocket):
    """The ASGI websocket wrapper python-engineio builds per upgrade, running our handler.

    python-engineio constructs it as `WebSocket(socket._websocket_handler, server)`; the
    bound method tells us the Engine.IO socket the connection belongs to.
    """

    def __init__(self, handler: Callable[[Any], Awaitable[None]], server: Any) -> None:
        super().__init__(handler, server)
        self.server = server
        self.socket = getattr(handler, "__self__", None)

    async def __call__(self, environ: dict[str, Any]) -> str:
        if self.socket is None:  # not a socket's handler: nothing to speed up
            result: str = await super().__call__(environ)
            return result
        self.asgi_receive = environ["asgi.receive"]
        self.asgi_send = environ["asgi.send"]
        await self.asgi_send({"type": "websocket.accept"})
        await _serve(self.socket, self, self.server)
        return ""


class LeanEngineServer(engineio.AsyncServer):
    """python-engineio's server with `LeanWebSocket` as its websocket transport."""

    #: Set by the Socket.IO server: gets the first look at every text frame.
    frame_hook: FrameHook | None = None
    #: Whether connections may use the speed-only shortcuts (the frame hook in our uvicorn
    #: protocol, DirectLine): FAST_PATHS, set by the Socket.IO server.
    shortcuts = True
    #: python-engineio's table of async driver pieces (set in its __init__).
    _async: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: What each connection did wrong, logged once per connection (eio sid).
        self.misbehaviour = Misbehaviour(logging.getLogger("claims_realtime.realtime.server"))
        #: The websockets our reader and writer serve now, by eio sid.
        self.wires: dict[str, Wire] = {}
        #: Our websocket handling and ChannelEngineSocket's session rules, only on the
        #: python-engineio release they were written for.
        self.adopts_sockets = FAST_PATH.check()
        if self.adopts_sockets:
            allow_payload_packets(self.max_http_buffer_size // _SMALLEST_PACKET_BYTES)
            if self._async.get("websocket") is asgi_driver.WebSocket:
                # A copy: the driver's table is shared by every server in the process.
                self._async = {**self._async, "websocket": LeanWebSocket}

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        # python-engineio builds its AsyncSocket itself, then announces the session with
        # `connect` before reading anything from it: the one moment to adopt it.
        if event == "connect" and self.adopts_sockets:
            socket = self.sockets.get(args[0])
            if type(socket) is async_socket.AsyncSocket:
                socket.__class__ = ChannelEngineSocket
        return await super()._trigger_event(event, *args, **kwargs)

    def cut(self, sid: str) -> None:
        """End session `sid`'s websocket now, even if its peer stopped reading (its writer
        then waits on a full TCP buffer and would never see a close): the reader's deadline
        is moved to now, and the writer cancelled. No-op for a session we do not serve (long-
        polling, or python-engineio's own handler)."""
        wire = self.wires.get(sid)
        if wire is not None:
            wire.cut()

    def send_ping(self, socket: Any) -> None:
        """A PING for ChannelEngineSocket's timer: through the websocket's DirectLine when it
        takes it, else queued, as python-engineio sends it."""
        wire = self.wires.get(socket.sid)
        line = wire.line if wire is not None else None
        if line is None or not line.write(_PING_FRAME):
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.PING))

    def take_pong(self, socket: Any) -> bool:
        """A websocket's PONG, taken by the frame hook: the next PING (python-engineio's
        `receive`) and a sign of life for the reader. False if our reader does not serve it."""
        wire = self.wires.get(socket.sid)
        if wire is None:
            return False
        wire.heard()
        if not socket.closing and not socket.closed:
            socket.schedule_ping()
        return True

    async def disconnect(self, sid: str | None = None) -> None:
        """python-engineio's, without waiting for the client to drain its queue: a polling
        client that is gone never does, and the request that asked for the disconnect (a
        POST over max_http_buffer_size) then hung until shutdown."""
        sockets = [sid] if sid is not None else list(self.sockets)
        for key in sockets:
            socket = self.sockets.get(key)
            if socket is not None:
                await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
                self.sockets.pop(key, None)


class DirectLine:
    """Writes an Engine.IO MESSAGE straight to the websocket, when that keeps frames in order:
    nothing queued, the writer task not in the middle of a send (it may be waiting for the
    transport to drain), and the protocol open and not pushing back. Otherwise `send` says
    no and the caller queues the packet as usual."""

    __slots__ = ("busy", "protocol", "queue")

    def __init__(self, protocol: ChannelWebSocketProtocol, queue: asyncio.Queue[Any]) -> None:
        self.protocol = protocol
        self.queue = queue
        #: True while the writer task has a packet in hand.
        self.busy = False

    def send(self, text: str) -> bool:
        return self.write("4" + text)  # a MESSAGE

    def write(self, frame: str) -> bool:
        """Write the encoded Engine.IO packet `frame`; False when it must be queued."""
        if self.busy or self.queue.qsize():
            return False
        return self.protocol.send_now(frame)


class Wire:
    """A websocket our reader and writer serve: its DirectLine (None: every write queued, as
    with FAST_PATHS off) and its reader's deadline, `silence` after a frame (moved each `step`)."""

    __slots__ = ("aborted", "deadline", "line", "moved", "silence", "socket", "step")

    def __init__(self, socket: Any, line: DirectLine | None) -> None:
        self.socket = socket
        self.line = line
        self.deadline: asyncio.Timeout | None = None  # set by `_read`
        self.silence = self.step = self.moved = 0.0
        #: Cut by the server: the deadline stays where `cut` put it.
        self.aborted = False

    def heard(self) -> None:
        """The peer sent a frame: a sign of life."""
        deadline = self.deadline
        if deadline is None or self.aborted:
            return
        now = asyncio.get_running_loop().time()
        if now - self.moved >= self.step:
            deadline.reschedule(now + self.silence)
            self.moved = now

    def cut(self) -> None:
        self.aborted = True
        self.line = None  # nothing more is written to it
        deadline = self.deadline
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())


def _protocol_of(ws: LeanWebSocket) -> ChannelWebSocketProtocol | None:
    """The uvicorn protocol behind the connection, when it is ours (ASGI hands us its bound
    `receive`; a wrapping middleware would hide it, and then we do without shortcuts).
    Recognised by its shortcuts, so that this module never imports realtime.transport."""
    protocol = getattr(ws.asgi_receive, "__self__", None)
    if hasattr(protocol, "send_now") and hasattr(protocol, "frame_hook"):
        return cast("ChannelWebSocketProtocol", protocol)
    return None


async def _serve(socket: Any, ws: LeanWebSocket, server: Any) -> None:
    """python-engineio's `AsyncSocket._websocket_handler`, with the waiting done leanly."""
    if socket.connected:
        # An upgrade from polling: the probe handshake, exactly as python-engineio does it.
        socket.upgrading = True
        if not await _upgrade(socket, ws, server):
            socket.upgrading = False
            return
        socket.upgraded = True
        socket.upgrading = False
    else:
        socket.connected = True
        socket.upgraded = True

    protocol = _protocol_of(ws) if server.shortcuts else None
    line = DirectLine(protocol, socket.queue) if protocol is not None else None
    writer = asyncio.ensure_future(_write(socket, ws, line))
    hook = getattr(server, "frame_hook", None)
    if protocol is not None and hook is not None:
        # Over the limit a frame is left to _read, which refuses it.
        protocol.frame_limit = server.max_http_buffer_size
        protocol.frame_hook = functools.partial(hook, socket)
    wire = server.wires[socket.sid] = Wire(socket, line)
    silent = False
    try:
        await _read(socket, ws, server, wire)
    except TimeoutError:  # the peer stopped talking, or was cut
        silent = not wire.aborted
        if silent:
            server.logger.info("%s: no frame within the heartbeat deadline", socket.sid)
    finally:
        if server.wires.get(socket.sid) is wire:
            del server.wires[socket.sid]  # writes go to the queue from now on
        if protocol is not None:
            protocol.frame_hook = None
        if silent or wire.aborted:
            # The peer may have stopped reading too: the writer could wait forever on a full
            # TCP buffer, so it is cancelled and the connection closed without a goodbye.
            writer.cancel()
        else:
            await socket.queue.put(None)  # unlock the writer so it can exit
        await asyncio.wait([writer])
        await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


async def _upgrade(socket: Any, ws: LeanWebSocket, server: Any) -> bool:
    try:
        probe = await _frame(ws, server)
    except OSError:
        return False
    decoded = eio_packet.Packet(encoded_packet=probe)
    if decoded.packet_type != eio_packet.PING or decoded.data != "probe":
        server.logger.info("%s: Failed websocket upgrade, no PING packet", socket.sid)
        return False
    await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
    await socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # end the pending poll
    try:
        upgrade = await _frame(ws, server)
    except OSError:
        return False
    if eio_packet.Packet(encoded_packet=upgrade).packet_type != eio_packet.UPGRADE:
        socket.upgraded = False
        server.logger.info("%s: Failed websocket upgrade, expected UPGRADE", socket.sid)
        return False
    return True


class PacketTooLarge(ValueError):
    """A frame over the server's max_http_buffer_size."""


async def _frame(ws: LeanWebSocket, server: Any) -> str | bytes:
    data: str | bytes = await ws.wait()
    if data and len(data) > server.max_http_buffer_size:
        raise PacketTooLarge(
            f"a frame of {len(data)} bytes (the limit is {server.max_http_buffer_size})"
        )
    return data


async def _read(socket: Any, ws: LeanWebSocket, server: Any, wire: Wire) -> None:
    """Frames until the peer closes, breaks the protocol, closes the session (CLOSE) or
    sends nothing for ping interval + ping timeout (TimeoutError)."""
    loop = asyncio.get_running_loop()
    silence = server.ping_interval + server.ping_timeout
    step = min(_DEADLINE_STEP, server.ping_timeout / 4)
    hook = getattr(server, "frame_hook", None)
    # timeout_at: the deadline is a point on the loop's clock (asyncio.timeout takes a delay).
    async with asyncio.timeout_at(loop.time() + silence) as deadline:
        # For Wire.heard() (frames taken before they reach this reader, too) and cut().
        wire.deadline, wire.silence, wire.step, wire.moved = deadline, silence, step, loop.time()
        while True:
            try:
                data = await _frame(ws, server)
            except PacketTooLarge as exc:
                refuse(socket, str(exc))
                return
            except Exception:  # the connection went away
                return
            wire.heard()
            if hook is not None and isinstance(data, str) and hook(socket, data):
                continue
            try:
                pkt = eio_packet.Packet(encoded_packet=data)
            except Exception:  # ValueError, IndexError, binascii.Error, RecursionError...
                refuse(socket, "an undecodable Engine.IO packet", data)
                return
            if pkt.packet_type not in CLIENT_PACKET_TYPES:
                refuse(socket, f"an Engine.IO packet of type {pkt.packet_type}", data)
                return
            try:
                await socket.receive(pkt)
            except eio_exceptions.SocketIsClosedError:
                server.logger.info("Receive error -- socket is closed")
                return
            except Exception:
                server.logger.exception("Unknown receive error")
            if socket.closed:  # the client's CLOSE, or the server ended the session
                return


async def _write(socket: Any, ws: LeanWebSocket, line: DirectLine | None) -> None:
    queue: asyncio.Queue[Any] = socket.queue
    send = ws.asgi_send
    try:
        while True:
            try:
                pkt = queue.get_nowait()
            except asyncio.QueueEmpty:
                pkt = await queue.get()
            queue.task_done()
            if pkt is None:
                break
            encoded = pkt.encode()
            if line is not None:
                line.busy = True  # until sent: a direct write now would overtake it
            if isinstance(encoded, bytes):
                await send({"type": "websocket.send", "bytes": encoded, "text": None})
            else:
                await send({"type": "websocket.send", "bytes": None, "text": encoded})
            if line is not None:
                line.busy = False
    except Exception:  # the connection is gone: the reader ends too
        log.debug("websocket writer stopped", exc_info=True)
    await ws.close()
