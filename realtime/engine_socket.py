"""python-engineio's session socket, holding long-polling clients to the rules websocket
clients are held to, with a heartbeat that leaves nothing waiting between PINGs but a timer.

python-engineio 4.15 answers a long-polling POST whose body is not an Engine.IO payload with
200 (and a logged traceback) and keeps the session; it ignores a CLOSE from the client until
the pending long-poll times out (30 s or more for a polling-only client to disconnect); and
Payload's cap of 16 packets per POST turns an honest client's batch of acks into that same
error. Here a broken payload, or a packet type no client sends, ends the session with a 400
and one warning; a CLOSE answers the pending poll at once, as the reference server does.
docs/protocol.md says what the upstream fixes would be.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engineio import async_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio import payload as eio_payload

#: The python-engineio release this module was written against, and what it relies on:
#: with any other, sessions keep python-engineio's own socket (realtime.engine checks both
#: modules' needs as one, so a mismatch gives one warning and fully stock python-engineio).
WRITTEN_FOR = "4.15"
_SOCKET_NAMES = (
    *("handle_post_request", "receive", "queue", "closing", "closed", "upgraded"),
    *("schedule_ping", "last_ping"),
)
RELIES_ON: tuple[tuple[Any, str], ...] = (
    *((async_socket.AsyncSocket, name) for name in (*_SOCKET_NAMES, "sid", "server")),
    (eio_payload.Payload, "max_decode_packets"),
)

#: What a client may send: PONG, MESSAGE, UPGRADE, CLOSE (a server never receives OPEN, PING
#: or NOOP; python-engineio ignores some of those and fails with a traceback on unknown ones).
CLIENT_PACKET_TYPES = frozenset(
    {eio_packet.PONG, eio_packet.MESSAGE, eio_packet.UPGRADE, eio_packet.CLOSE}
)


def allow_payload_packets(count: int) -> None:
    """Let one long-polling POST carry up to `count` packets. A polling client sends every
    ack it owes in one POST (an event each), and python-engineio refuses more than 16 as
    `Too many packets in payload`. `Payload.max_decode_packets` is the library's own knob
    for this (process-wide, as its maintainer advises); the POST body limit still bounds
    the work per request."""
    if eio_payload.Payload.max_decode_packets < count:
        eio_payload.Payload.max_decode_packets = count


class BrokenClient(eio_exceptions.EngineIOError):
    """The client broke the protocol: python-engineio answers 400 and ends the session."""


def refuse(socket: Any, what: str, data: str | bytes | None = None) -> None:
    """Note a protocol violation (logged once per connection, with the server's other
    notes about it); the caller then ends the connection."""
    # A short sample: enough to show the packet type, never as far as a CONNECT's token.
    sample = "" if data is None else f" {data!r:.20}"
    socket.server.misbehaviour.note(socket.sid, "sent %s%s; closing the connection", what, sample)


class ChannelEngineSocket(async_socket.AsyncSocket):
    """python-engineio's AsyncSocket with the rules above; adopted by the server as each
    session opens (engine.LeanEngineServer)."""

    #: When the unanswered PING went out (time.time()), None while the next one waits.
    last_ping: float | None

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        try:
            await super().handle_post_request(environ)
        except eio_exceptions.EngineIOError:
            raise  # python-engineio's own refusals (too long, closed): a 400 already
        except Exception as exc:  # undecodable: ValueError, UnicodeDecodeError, KeyError...
            refuse(self, f"an undecodable long-polling payload ({type(exc).__name__})")
            raise BrokenClient from exc

    async def receive(self, pkt: eio_packet.Packet) -> None:
        if self.closing or self.closed:
            return  # the rest of a POST whose earlier packet ended the session
        if pkt.packet_type not in CLIENT_PACKET_TYPES:
            refuse(self, f"an Engine.IO packet of type {pkt.packet_type}", pkt.encode())
            raise BrokenClient
        await super().receive(pkt)
        if pkt.packet_type == eio_packet.CLOSE and not self.upgraded:
            # python-engineio's close() sends nothing to a client that closed: answer the
            # pending long-poll now (with a NOOP, like the reference server), not at its
            # timeout. None then ends any later poll, which python-engineio answers 400.
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
            self.queue.put_nowait(None)

    def schedule_ping(self) -> None:
        """The next PING, ping interval from now (once the last one was answered), by a
        timer. python-engineio starts a task that sleeps: its task, coroutines, context and
        futures lived a whole ping interval, so young garbage collections under load (a few
        a minute) each scanned every connection's heartbeat, tens of ms with 1,000 sockets."""
        if self.last_ping:
            self.last_ping = None
            asyncio.get_running_loop().call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()  # python-engineio's clock for the PONG's deadline
            self.server.send_ping(self)
