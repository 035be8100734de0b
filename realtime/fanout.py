"""Writing each channel's events to the sockets of this process: in sequence order, with no
gap and no duplicate, whether an event arrives live or is replayed from history.

Every socket has a cursor: the last sequence written to it. A live event is written only when
it is the cursor's successor; anything else (a socket still replaying, events notified out of
order) is left to a catch-up loop that reads the durable history from the cursor on. Because
events are committed before they are announced, a history read that starts after an
announcement always sees it: the seam between replay and live delivery cannot lose an event,
and the cursor check cannot repeat one.

Writes never await: a burst of events for a channel is written atomically with respect to
other tasks, so order is kept without locks. How a packet reaches its Engine.IO session
(written at once, or queued) is the `Transport`'s business (realtime.sockets).

The session's queue is bounded here, not by python-engineio: a client that stops reading
would otherwise grow it (and the server's memory) without limit. A write that finds
`max_backlog` packets still unsent drops the connection instead (a slow consumer): the
client resumes later by replay, from what it confirmed, and loses nothing. Replays pace
themselves (a page at a time, when the queue has room), so only a client that stops
reading reaches the bound, never a long replay to one that reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from claims_realtime.realtime import metrics
from claims_realtime.realtime.sockets import BACKLOGGED, QUEUED, Transport

log = logging.getLogger(__name__)

#: (sequence, encoded Socket.IO packet) pairs, in sequence order.
Entries = Sequence[tuple[int, str]]
HistoryReader = Callable[[str, int, int], Awaitable[Entries]]

#: Consecutive empty history reads tolerated while the announced head is ahead of a cursor.
_MAX_EMPTY_READS = 5

#: Default bound of one connection's unsent packets (MAX_SOCKET_BACKLOG). Sized to ride out
#: a full replay burst: a channel keeps up to 10,000 events (HISTORY_MAX_EVENTS), and a
#: client resuming after a long absence gets them all at once when replays are not paced
#: (other implementations, or a replay page landing on a live burst: batches carry up to
#: 500 events). 10,000 packets of a few hundred bytes each is a few MB per connection at
#: worst: bounded, yet far above what a client that reads ever has queued (loopback runs
#: at 8,000 deliveries/s showed tens). Paced replays here need only one page of it.
MAX_SOCKET_BACKLOG = 10_000
#: How often a paced replay looks for room in the queue (seconds).
_ROOM_POLL = 0.01


class HistoryGap(Exception):
    """History no longer holds what a socket needs next (pruned while it was replaying)."""


@dataclass(eq=False)
class Subscriber:
    """One socket attached to a channel namespace."""

    sid: str
    eio_sid: str
    channel_id: str
    namespace: str
    #: Last sequence written to this socket.
    cursor: int
    #: True while the catch-up loop owns this socket's writes.
    catching_up: bool = True
    detached: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    #: The `recovery` message, written first once the client knows it is connected.
    recovery_packet: str = field(default="", repr=False)
    #: Dropped as a slow consumer: nothing more is written to it.
    dropped: bool = False


@dataclass
class _Positions:
    delivered: int | None = None
    confirmed: int | None = None


class Fanout:
    """The local (this-process) side of delivery."""

    def __init__(
        self,
        transport: Transport,
        read_history: HistoryReader,
        page_size: int = 500,
        max_backlog: int = MAX_SOCKET_BACKLOG,
    ):
        self._transport = transport
        self._read = read_history
        self._max_backlog = max_backlog
        # A replay page must fit in the queue with room to spare (see _wait_for_room).
        self._page = max(1, min(page_size, max_backlog // 2))
        #: Connections dropped because they left `max_backlog` packets unsent.
        self.slow_consumer_drops = 0
        self._channels: dict[str, dict[str, Subscriber]] = {}
        #: The same sockets by (Engine.IO connection, channel): how an ack frame finds its
        #: socket without python-socketio's per-namespace lookup (see `confirm_connection`).
        self._by_connection: dict[tuple[str, str], Subscriber] = {}
        #: Highest sequence announced per channel with local subscribers.
        self._head: dict[str, int] = {}
        #: Positions not yet written back to the database.
        self._pending: dict[str, _Positions] = {}
        #: Recently closed channels, so a connection racing the close is refused.
        self._closed: dict[str, float] = {}

    # -- membership ---------------------------------------------------------------------

    def has_subscribers(self, channel_id: str) -> bool:
        return bool(self._channels.get(channel_id))

    def is_closed(self, channel_id: str) -> bool:
        return channel_id in self._closed

    def attach(self, sub: Subscriber, *, head: int, recovery_packet: str) -> bool:
        """Attach a socket; True if it is the channel's first here.

        Its replay starts at `connected()`: `recovery_packet`, then every kept event after
        `sub.cursor`, then live events. Until then live events wait in history for it.
        """
        subs = self._channels.setdefault(sub.channel_id, {})
        first = not subs
        if sub.sid not in subs:
            metrics.CONNECTED_SOCKETS.inc()
        subs[sub.sid] = sub
        self._by_connection[(sub.eio_sid, sub.channel_id)] = sub
        self._head[sub.channel_id] = max(self._head.get(sub.channel_id, 0), head)
        sub.catching_up = True
        sub.recovery_packet = recovery_packet
        return first

    def connected(self, sid: str, channel_id: str) -> None:
        """The client has been sent its namespace CONNECT: start the socket's replay.

        (A client drops anything that arrives on a namespace before its CONNECT, and
        python-socketio sends that only after the connect handler returned.)
        """
        sub = self.subscriber(sid, channel_id)
        if sub is not None and sub.task is None and not sub.detached:
            sub.task = asyncio.get_running_loop().create_task(self._replay(sub))

    def detach(self, sid: str, channel_id: str) -> bool:
        """Forget a socket; True if it was the channel's last one here."""
        subs = self._channels.get(channel_id, {})
        sub = subs.pop(sid, None)
        if sub is None:
            return False
        metrics.CONNECTED_SOCKETS.dec()
        if self._by_connection.get((sub.eio_sid, channel_id)) is sub:
            del self._by_connection[(sub.eio_sid, channel_id)]
        sub.detached = True
        if sub.task is not None and not sub.task.done():
            sub.task.cancel()
        if subs:
            return False
        del self._channels[channel_id]
        self._head.pop(channel_id, None)
        return True

    def channel_ids(self) -> list[str]:
        """Channels with sockets in this process."""
        return list(self._channels)

    def advance_head(self, channel_id: str, head: int) -> None:
        """The channel has recorded up to `head` (learnt from the database): catch up every
        live socket that is behind, as a lost announcement would have left it."""
        subs = self._channels.get(channel_id)
        if not subs or head <= self._head.get(channel_id, 0):
            return
        self._head[channel_id] = head
        for sub in list(subs.values()):
            if not sub.catching_up and sub.cursor < head:
                self._start_catch_up(sub)

    def subscriber(self, sid: str, channel_id: str) -> Subscriber | None:
        return self._channels.get(channel_id, {}).get(sid)

    # -- delivery -------------------------------------------------------------------------

    def deliver_all(self, per_channel: Mapping[str, Entries]) -> None:
        """Write newly recorded events of each channel to its local sockets, counted once (a
        metric update takes a lock: one per channel was ~1% of the event loop on the user
        workload, one event per channel)."""
        written = 0
        for channel_id, entries in per_channel.items():
            written += self._deliver(channel_id, entries)
        if written:
            metrics.DELIVERIES.inc(written)

    def _deliver(self, channel_id: str, entries: Entries) -> int:
        """Write what the channel's local sockets have not had yet; answer how many written."""
        subs = self._channels.get(channel_id)
        if not subs or not entries:
            return 0
        self._head[channel_id] = max(self._head.get(channel_id, 0), entries[-1][0])
        written = 0  # counted here, reported once: no metrics call per socket
        for sub in list(subs.values()):
            if sub.catching_up:
                continue  # its catch-up loop will read these from history
            for sequence, text in entries:
                if sequence <= sub.cursor:
                    continue
                if sequence != sub.cursor + 1:
                    self._start_catch_up(sub)
                    break
                if not self._write(sub, text):
                    break
                sub.cursor = sequence
                written += 1
            self.note_positions(channel_id, delivered=sub.cursor)
        return written

    def write_message(self, channel_id: str, text: str) -> None:
        """Write one non-event message (e.g. `channel_closed`) to every local socket."""
        for sub in list(self._channels.get(channel_id, {}).values()):
            self._write(sub, text)

    def _write(self, sub: Subscriber, text: str) -> bool:
        sent = self._transport.send(sub.eio_sid, text, self._max_backlog)
        if sent <= QUEUED:
            return True  # written, or queued for the session
        if sent == BACKLOGGED:
            self._drop_slow_consumer(sub)
        return False

    def _drop_slow_consumer(self, sub: Subscriber) -> None:
        """`sub`'s connection left `max_backlog` packets unsent: drop it (every channel on
        it), free its queue, and keep its channels' resume points at what was confirmed."""
        if self._transport.closing(sub.eio_sid):
            return  # already going
        # Cut the connection (its writer may be stuck sending to a peer that does not read),
        # empty its queue and close it.
        unsent = self._transport.abort(sub.eio_sid)
        self.slow_consumer_drops += 1
        metrics.record_slow_consumer_drop()
        log.warning(
            "dropping connection %s (channel %s): %d packets unsent, it stopped reading",
            sub.eio_sid,
            sub.channel_id,
            unsent,
        )
        for subs in self._channels.values():
            for other in subs.values():
                if other.eio_sid == sub.eio_sid:
                    other.dropped = other.catching_up = True  # live delivery skips it
                    # The queued events were never sent. Where the client confirmed nothing,
                    # the resume point would fall back to `delivered` (counted when queued):
                    # a confirmed position of 0 keeps it at what the client acknowledged.
                    self.note_positions(other.channel_id, confirmed=0)

    def _start_catch_up(self, sub: Subscriber) -> None:
        sub.catching_up = True
        sub.task = asyncio.get_running_loop().create_task(self._catch_up_or_drop(sub))

    async def _replay(self, sub: Subscriber) -> None:
        self._write(sub, sub.recovery_packet)
        await self._catch_up_or_drop(sub)

    async def _catch_up_or_drop(self, sub: Subscriber) -> None:
        try:
            await self._catch_up(sub)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The client resumes on reconnect and is told honestly what it missed.
            log.warning(
                "replay to %s on %s failed (%s); disconnecting it", sub.sid, sub.channel_id, exc
            )
            await self._transport.disconnect(sub.sid, sub.namespace)

    async def _wait_for_room(self, sub: Subscriber) -> bool:
        """Pace a replay: wait until a page fits in the socket's queue (under the slow
        consumer bound) so that a long replay to a client that reads is never dropped.
        False when the socket went away meanwhile."""
        while not sub.detached and not sub.dropped:
            queued = self._transport.backlog(sub.eio_sid)
            if queued is None:
                return False
            if queued + self._page < self._max_backlog:
                return True
            await asyncio.sleep(_ROOM_POLL)
        return False

    async def _catch_up(self, sub: Subscriber) -> None:
        empty_reads = 0
        while not sub.detached:
            if not await self._wait_for_room(sub):
                return
            entries = await self._read(sub.channel_id, sub.cursor, self._page)
            if sub.detached:
                return
            if entries:
                empty_reads = 0
                if entries[0][0] != sub.cursor + 1:
                    raise HistoryGap(f"next kept sequence is {entries[0][0]}, cursor {sub.cursor}")
                written = 0
                for sequence, text in entries:
                    if not self._write(sub, text):
                        break
                    sub.cursor = sequence
                    written += 1
                metrics.DELIVERIES.inc(written)
                if written < len(entries):
                    return
                self.note_positions(sub.channel_id, delivered=sub.cursor)
                continue
            if sub.cursor >= self._head.get(sub.channel_id, 0):
                sub.catching_up = False  # caught up: live delivery takes over, no await between
                return
            # An announced event not visible yet: its commit raced our read. Read again.
            empty_reads += 1
            if empty_reads > _MAX_EMPTY_READS:
                raise HistoryGap(f"head {self._head.get(sub.channel_id)} not in history")
            await asyncio.sleep(0.005 * empty_reads)

    # -- positions ------------------------------------------------------------------------

    def confirm(self, sid: str, channel_id: str, sequence: int) -> None:
        """A client confirmed everything up to `sequence` (cumulative)."""
        sub = self.subscriber(sid, channel_id)
        if sub is not None:
            self._confirm(sub, sequence)

    def confirm_connection(self, eio_sid: str, channel_id: str, sequence: int) -> bool:
        """`confirm`, for an ack read straight off Engine.IO connection `eio_sid` (every
        delivered event comes back as one: one dict lookup here rather than python-socketio's
        namespace lookup, then ours). False if that connection is not attached to the
        channel: nothing is confirmed on anyone else's behalf."""
        sub = self._by_connection.get((eio_sid, channel_id))
        if sub is None:
            return False
        self._confirm(sub, sequence)
        return True

    def _confirm(self, sub: Subscriber, sequence: int) -> None:
        if sequence > 0:  # min: never confirmed past what was written to the socket
            self.note_positions(sub.channel_id, confirmed=min(sequence, sub.cursor))

    def note_positions(
        self, channel_id: str, *, delivered: int | None = None, confirmed: int | None = None
    ) -> None:
        positions = self._pending.get(channel_id)
        if positions is None:
            positions = self._pending[channel_id] = _Positions()
        if delivered is not None and delivered > 0:
            positions.delivered = max(positions.delivered or 0, delivered)
        if confirmed is not None:
            positions.confirmed = max(positions.confirmed or 0, confirmed)

    def pending_positions(self, channel_id: str) -> tuple[int | None, int | None]:
        """(delivered, confirmed) of the channel not yet written back."""
        positions = self._pending.get(channel_id, _Positions())
        return positions.delivered, positions.confirmed

    def take_positions(
        self, channel_id: str | None = None
    ) -> dict[str, tuple[int | None, int | None]]:
        """Hand over positions to write back: all of them, or one channel's."""
        if channel_id is not None:
            taken = (
                {channel_id: self._pending.pop(channel_id)} if channel_id in self._pending else {}
            )
        else:
            taken, self._pending = self._pending, {}
        return {cid: (p.delivered, p.confirmed) for cid, p in taken.items()}

    # -- closing --------------------------------------------------------------------------

    async def close(self, channel_id: str, closed_packet: str) -> None:
        """Tell the channel's local sockets it is closed, then disconnect them."""
        now = time.monotonic()
        self._closed = {cid: at for cid, at in self._closed.items() if now - at < 300}
        self._closed[channel_id] = now
        self.write_message(channel_id, closed_packet)
        for sub in list(self._channels.get(channel_id, {}).values()):
            await self._transport.disconnect(sub.sid, sub.namespace)
