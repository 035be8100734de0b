"""The delivery service of one process: what HTTP handlers and the channel namespace call.

    publish()        record events durably, then write them to local sockets
    attach/detach()  a socket joins or leaves a channel (resume point, recovery, status)
    reconnect()      PUT .../reconnect: status connected, missed-event count
    close_channel()  DELETE: close, tell the sockets, disconnect them
and, in the background, writing delivery positions back and pruning history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from models import history, ingest, subscriptions
from models.channel import Channel, ChannelStatus
from models.clock import rfc3339, rfc3339_or_none
from models.credentials import secret_matches
from models.history import Retention
from realtime.fanout import Entries, Fanout, Subscriber
from realtime.namespace import ChannelNamespace
from realtime.protocol import (
    CHANNEL_CLOSED,
    RECOVERY,
    Refusal,
    event_packet,
    message_packet,
)
from realtime.server import ChannelSocketServer

log = logging.getLogger(__name__)


class Hub:
    """Durable delivery over one Socket.IO server."""

    def __init__(
        self,
        sio: ChannelSocketServer,
        retention: Retention,
        *,
        max_event_data_bytes: int,
        flush_interval: float = 0.5,
        prune_interval: float = 60.0,
    ) -> None:
        self.sio = sio
        self.retention = retention
        self.max_event_data_bytes = max_event_data_bytes
        self.flush_interval = flush_interval
        self.prune_interval = prune_interval
        self.fanout = Fanout(sio, self._read_history)
        sio.on_sequence_ack = self.fanout.confirm
        sio.register_namespace(ChannelNamespace(self))
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopped = False
        self._tasks = [
            asyncio.create_task(self._every(self.flush_interval, self.flush)),
            asyncio.create_task(self._every(self.prune_interval, self.prune)),
        ]

    async def stop(self) -> None:
        """Disconnect every socket while the database is still open (their detach writes
        positions and status), then stop background jobs and write what is left."""
        for socket in list(self.sio.eio.sockets.values()):
            # wait=False: a clean close waits until the client drained its queue, which a
            # client that already went away never does.
            await socket.close(wait=False, reason=self.sio.eio.reason.SERVER_DISCONNECT)
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.flush()

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.exception("background job %s failed; retrying in %ss", job.__name__, seconds)

    # -- events ---------------------------------------------------------------------------

    async def publish(
        self, submitted: Sequence[Mapping[str, Any]], *, batch: bool = False
    ) -> list[ingest.Recorded]:
        """Record events (committed before this returns), then deliver them live."""
        recorded = await ingest.record_events(
            submitted, max_data_bytes=self.max_event_data_bytes, batch=batch
        )
        per_channel: dict[str, list[tuple[int, str]]] = {}
        for outcome in recorded:
            for placement in outcome.placements:
                if self.fanout.has_subscribers(placement.channel_id):
                    per_channel.setdefault(placement.channel_id, []).append(
                        (
                            placement.sequence,
                            event_packet(placement.channel_id, placement.sequence, outcome.event),
                        )
                    )
        for channel_id, entries in per_channel.items():
            self.fanout.deliver(channel_id, entries)
        return recorded

    async def _read_history(self, channel_id: str, after: int, limit: int) -> Entries:
        rows = await history.read_after(channel_id, after, limit, self.retention)
        return [(row.sequence, event_packet(channel_id, row.sequence, row.event)) for row in rows]

    # -- sockets --------------------------------------------------------------------------

    async def attach(
        self,
        channel_id: str,
        namespace: str,
        sid: str,
        eio_sid: str,
        token: str,
        last_sequence: int | None,
    ) -> None:
        """Accept a socket on a channel and start its replay, or raise Refusal."""
        channel = await Channel.get_or_none(id=channel_id)
        if channel is None:
            raise Refusal("channel_not_found", f"No channel {channel_id}.")
        if not secret_matches(token, channel.token_hash):
            raise Refusal("invalid_token", "auth.token is not this channel's token.")
        if channel.status == ChannelStatus.CLOSED:
            raise Refusal(
                "channel_closed",
                f"Channel {channel_id} was closed at {rfc3339_or_none(channel.closed_at)}.",
            )
        head = channel.head_sequence
        if last_sequence is not None and last_sequence > head:
            raise Refusal(
                "last_sequence_ahead",
                f"auth.last_sequence {last_sequence} is ahead of the channel's newest event "
                f"({head}).",
            )
        resumed_from = self._resume_point(channel) if last_sequence is None else last_sequence
        first = await history.first_available(channel, self.retention)
        start = max(resumed_from, first - 1)
        recovery = {
            "channel_id": channel_id,
            "resumed_from": resumed_from,
            "head_sequence": head,
            "replayed": head - start,
            "recovered": resumed_from >= first - 1,
            "first_available_sequence": first,
            "unavailable": start - resumed_from,
        }
        if self.fanout.is_closed(channel_id):  # closed while we were reading
            raise Refusal("channel_closed", f"Channel {channel_id} is closed.")
        self.fanout.attach(
            Subscriber(
                sid=sid, eio_sid=eio_sid, channel_id=channel_id, namespace=namespace, cursor=start
            ),
            head=head,
            recovery_packet=message_packet(channel_id, RECOVERY, recovery),
        )
        await history.mark_status(channel_id, ChannelStatus.CONNECTED)

    def _resume_point(self, channel: Channel) -> int:
        """The channel's stored resume point, moved on by positions not yet written back."""
        delivered, confirmed = self.fanout.pending_positions(channel.id)
        if confirmed is not None:
            channel.confirmed_sequence = max(channel.confirmed_sequence or 0, confirmed)
        if delivered is not None:
            channel.delivered_sequence = max(channel.delivered_sequence or 0, delivered)
        return channel.resume_sequence

    async def detach(self, channel_id: str, sid: str) -> None:
        was_last = self.fanout.detach(sid, channel_id)
        if self._stopped:
            return  # a straggler after shutdown: the database is closed, clients resume
        await self.flush(channel_id)
        # Re-checked after the await: another socket may have attached meanwhile.
        if was_last and not self.fanout.has_subscribers(channel_id):
            await history.mark_status(channel_id, ChannelStatus.DISCONNECTED)

    # -- channel lifecycle ----------------------------------------------------------------

    async def reconnect(self, channel_id: str) -> tuple[Channel, int]:
        await self.flush(channel_id)
        return await subscriptions.reconnect_channel(channel_id)

    async def close_channel(self, channel_id: str) -> Channel:
        channel = await subscriptions.close_channel(channel_id)
        assert channel.closed_at is not None
        notice = {"channel_id": channel_id, "closed_at": rfc3339(channel.closed_at)}
        await self.fanout.close(channel_id, message_packet(channel_id, CHANNEL_CLOSED, notice))
        return channel

    # -- background -----------------------------------------------------------------------

    async def flush(self, channel_id: str | None = None) -> None:
        """Write pending delivered/confirmed positions back to the database."""
        taken = self.fanout.take_positions(channel_id)
        for cid, (delivered, confirmed) in taken.items():
            try:
                await history.save_positions(cid, delivered=delivered, confirmed=confirmed)
            except Exception:
                self.fanout.note_positions(cid, delivered=delivered, confirmed=confirmed)
                raise

    async def prune(self) -> None:
        removed = await history.prune(self.retention)
        if removed:
            log.info("pruned %d history entries beyond retention", removed)
