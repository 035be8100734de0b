"""The delivery service of one process: what HTTP handlers and the channel namespace call.

    publish()        record events durably, then write them to local sockets
    attach/detach()  a socket joins or leaves a channel (resume point, recovery, status)
    confirm()        a client's `ack` event
    reconnect()      PUT .../reconnect: status connected, missed-event count
    close_channel()  DELETE: close, tell the sockets, disconnect them
and, in the background: writing delivery positions back, pruning history, this process's
heartbeat (reaping processes that died), and reconciling local sockets with the database
when other processes announce through a broker (see realtime.broker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from claims_realtime.models import history, ingest, presence, subscriptions
from claims_realtime.models.channel import Channel, ChannelStatus
from claims_realtime.models.clock import rfc3339, rfc3339_or_none
from claims_realtime.models.credentials import random_id, secret_matches
from claims_realtime.models.db import database_reachable
from claims_realtime.models.history import Retention
from claims_realtime.realtime import metrics, relay, stopping
from claims_realtime.realtime.broker import Broker
from claims_realtime.realtime.fanout import MAX_SOCKET_BACKLOG, Entries, Fanout, Subscriber
from claims_realtime.realtime.limits import (
    DEFAULT_CONNECT_FAILURE_LIMIT,
    DEFAULT_CONNECT_FAILURE_WINDOW,
    FailureLimiter,
)
from claims_realtime.realtime.protocol import (
    CHANNEL_CLOSED,
    RECOVERY,
    PreparedEvent,
    Refusal,
    channel_id_of,
    event_packet,
    message_packet,
    prepare,
    prepare_fields,
)
from claims_realtime.realtime.readiness import Readiness, ReadinessCheck, combine
from claims_realtime.realtime.server import ChannelSocketServer

log = logging.getLogger(__name__)

#: With other processes, how often local sockets are checked against the database: the
#: longest an event waits when its announcement was lost (Redis down or a dropped message).
RECONCILE_SECONDS = 5.0


def closed_notice(channel_id: str, closed_at: datetime) -> str:
    """The `channel_closed` message."""
    notice = {"channel_id": channel_id, "closed_at": rfc3339(closed_at)}
    return message_packet(channel_id, CHANNEL_CLOSED, notice)


#: Sockets whose attach (token check, resume point, presence: a few queries) runs at once.
MAX_CONCURRENT_ATTACHES = 32


class Hub:
    """Durable delivery over one Socket.IO server."""

    def __init__(
        self,
        sio: ChannelSocketServer,
        retention: Retention,
        *,
        max_event_data_bytes: int,
        broker: Broker | None = None,
        flush_interval: float = 0.5,
        prune_interval: float = 60.0,
        heartbeat_interval: float = 5.0,
        stale_after: float = 20.0,
        connect_failures: FailureLimiter | None = None,
        max_socket_backlog: int = MAX_SOCKET_BACKLOG,
    ) -> None:
        #: This process, as the presence table and the broker know it.
        self.node_id = random_id("node_", 16)
        self.broker = broker or Broker()
        self.sio = sio
        self.retention = retention
        self.max_event_data_bytes = max_event_data_bytes
        self.flush_interval = flush_interval
        self.prune_interval = prune_interval
        self.heartbeat_interval = heartbeat_interval
        self.stale_after = stale_after
        #: Past `max_socket_backlog` unsent packets a connection is dropped (slow consumer);
        #: its namespaces' disconnect then detaches it like any other (see detach()).
        self.fanout = Fanout(sio.transport, self._read_history, max_backlog=max_socket_backlog)
        #: Connect attempts with bad credentials per client address (see realtime.limits).
        self.connect_failures = (
            connect_failures
            if connect_failures is not None
            else FailureLimiter(DEFAULT_CONNECT_FAILURE_LIMIT, DEFAULT_CONNECT_FAILURE_WINDOW)
        )
        sio.on_sequence_ack = self.fanout.confirm
        sio.on_connection_ack = self.fanout.confirm_connection
        sio.on_namespace_connected = self._on_namespace_connected
        #: Further readiness checks by name (the outbox consumer's, when enabled).
        self.readiness_checks: dict[str, ReadinessCheck] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._stopping = asyncio.Event()
        self._attaching = asyncio.Semaphore(MAX_CONCURRENT_ATTACHES)

    @property
    def slow_consumer_drops(self) -> int:
        """Connections this process dropped for leaving too many packets unsent."""
        return self.fanout.slow_consumer_drops

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopped = False
        self._stopping.clear()
        await presence.register_node(self.node_id)
        jobs = [(self.flush_interval, self.flush), (self.prune_interval, self.prune)]
        jobs.append((self.heartbeat_interval, self.heartbeat))
        if self.broker.distributed:
            jobs.append((RECONCILE_SECONDS, self.reconcile))
        self._tasks = [asyncio.create_task(self._every(seconds, job)) for seconds, job in jobs]
        await self.broker.start(self._on_relayed, self.reconcile)

    async def stop(self) -> None:
        """Disconnect every socket while the database is still open (their detach writes
        positions and status), then stop background jobs and write what is left."""
        for socket in list(self.sio.eio.sockets.values()):
            # wait=False: a clean close waits until the client drained its queue, which a
            # client that already went away never does.
            await socket.close(wait=False, reason=self.sio.eio.reason.SERVER_DISCONNECT)
        self._stopped = True
        await self.broker.stop()
        self._stopping.set()
        await stopping.finish(self._tasks)
        self._tasks = []
        await self.flush()
        await presence.forget_node(self.node_id)

    async def _every(self, seconds: float, job: Any) -> None:
        while await stopping.pause(self._stopping, seconds):
            try:
                await job()
            except Exception:
                log.exception("background job %s failed; retrying in %ss", job.__name__, seconds)

    # -- events ---------------------------------------------------------------------------

    async def publish(
        self,
        submitted: Sequence[Mapping[str, Any]],
        *,
        batch: bool = False,
        received_at: float | None = None,
    ) -> list[ingest.Recorded]:
        """Record events (committed before this returns), then deliver them live: to this
        process's sockets directly, to the other processes' through the broker.

        `received_at` (time.perf_counter()) is when the request arrived, for the ingest
        latency metric; by default, now.
        """
        received_at = time.perf_counter() if received_at is None else received_at
        recorded = await ingest.record_events(
            submitted, max_data_bytes=self.max_event_data_bytes, batch=batch
        )
        committed_at = time.perf_counter()
        metrics.INGEST_LATENCY.observe(committed_at - received_at)
        duplicates = sum(1 for outcome in recorded if outcome.duplicate)
        metrics.EVENTS_RECORDED.inc(len(recorded) - duplicates)
        metrics.EVENTS_DUPLICATE.inc(duplicates)
        per_channel: dict[str, list[tuple[int, str]]] = {}
        for outcome in recorded:
            prepared: PreparedEvent | None = None
            for channel_id, sequence in outcome.placements:
                if self.fanout.has_subscribers(channel_id):
                    prepared = prepared or prepare_fields(outcome.event)
                    packet = event_packet(channel_id, sequence, prepared)
                    per_channel.setdefault(channel_id, []).append((sequence, packet))
        self.fanout.deliver_all(per_channel)
        if per_channel:
            metrics.DELIVERY_LATENCY.observe(time.perf_counter() - committed_at)
        if self.broker.distributed:
            message = relay.encode(self.node_id, recorded)
            if message is not None:
                await self.broker.publish(message)
        return recorded

    def _on_relayed(self, payload: bytes) -> None:
        """Another process recorded a batch: deliver it to our sockets of its channels."""
        relayed = relay.decode(payload)
        if relayed.node == self.node_id:
            return  # delivered locally already
        for address in relayed.connect_failures:
            self.connect_failures.failed(address)
        for channel_id, closed_at in relayed.closed.items():
            # Sockets of a channel closed elsewhere are told and dropped here too.
            notice = closed_notice(channel_id, closed_at)
            asyncio.get_running_loop().create_task(self.fanout.close(channel_id, notice))
        prepared: dict[int, PreparedEvent] = {}  # each event serialised once
        per_channel: dict[str, Entries] = {}
        for channel_id, pairs in relayed.channels.items():
            if self.fanout.has_subscribers(channel_id):
                entries = per_channel[channel_id] = []
                for sequence, index in pairs:
                    if index not in prepared:
                        prepared[index] = prepare(relayed.events[index])
                    entries.append((sequence, event_packet(channel_id, sequence, prepared[index])))
        self.fanout.deliver_all(per_channel)

    async def _read_history(self, channel_id: str, after: int, limit: int) -> Entries:
        rows = await history.read_after(channel_id, after, limit, self.retention)
        return [
            (row.sequence, event_packet(channel_id, row.sequence, prepare_fields(row)))
            for row in rows
        ]

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
        # A bounded number at a time: they queue for the database anyway, and 1,000 clients
        # connecting at once otherwise each held a query's worth of objects at the same
        # moment; freed, that memory stayed fragmented in the process for good
        # (docs/performance-log.md#the-delivery-path).
        async with self._attaching:
            channel = await subscriptions.channel_or_none(channel_id)
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
            window = history.Resumption(resumed_from, head, first)
            start = window.start
            recovery: dict[str, Any] = {
                "channel_id": channel_id,
                "resumed_from": resumed_from,
                "head_sequence": head,
                "replayed": head - start,
                "recovered": window.recovered,
                "first_available_sequence": first,
                "unavailable": window.unavailable,
            }
            if self.fanout.is_closed(channel_id):  # closed while we were reading
                raise Refusal("channel_closed", f"Channel {channel_id} is closed.")
            self.fanout.attach(
                Subscriber(
                    sid=sid,
                    eio_sid=eio_sid,
                    channel_id=channel_id,
                    namespace=namespace,
                    cursor=start,
                ),
                head=head,
                recovery_packet=message_packet(channel_id, RECOVERY, recovery),
            )
            if recovery["replayed"] > 0:
                metrics.REPLAYS.inc()
                metrics.REPLAY_SIZE.observe(recovery["replayed"])
            if not recovery["recovered"]:
                metrics.UNRECOVERED_RESUMES.inc()
            await presence.socket_attached(channel_id, self.node_id)

    def _on_namespace_connected(self, sid: str, namespace: str) -> None:
        channel_id = channel_id_of(namespace)
        if channel_id is not None:
            self.fanout.connected(sid, channel_id)

    def _resume_point(self, channel: Channel) -> int:
        """The channel's stored resume point, moved on by positions not yet written back."""
        delivered, confirmed = self.fanout.pending_positions(channel.id)
        if confirmed is not None:
            channel.confirmed_sequence = max(channel.confirmed_sequence or 0, confirmed)
        if delivered is not None:
            channel.delivered_sequence = max(channel.delivered_sequence or 0, delivered)
        return channel.resume_sequence

    async def credential_failure(self, address: str) -> None:
        """`address` presented bad credentials: count it here and, through the broker, in
        every other process, so that N processes do not give an address N times the limit."""
        self.connect_failures.failed(address)
        if self.broker.distributed:
            await self.broker.publish(relay.encode_connect_failure(self.node_id, address))

    def confirm(self, sid: str, channel_id: str, sequence: int) -> None:
        """The client confirmed everything up to `sequence` (cumulative)."""
        self.fanout.confirm(sid, channel_id, sequence)

    async def detach(self, channel_id: str, sid: str) -> None:
        self.fanout.detach(sid, channel_id)
        if self._stopped:
            return  # a straggler after shutdown: the database is closed, clients resume
        await self.flush(channel_id)
        # `disconnected` only once no process, this one included, holds a socket of it.
        await presence.socket_detached(channel_id, self.node_id)

    # -- channel lifecycle ----------------------------------------------------------------

    async def reconnect(self, channel_id: str) -> tuple[Channel, int]:
        await self.flush(channel_id)
        return await subscriptions.reconnect_channel(channel_id)

    async def close_channel(self, channel_id: str) -> Channel:
        channel = await subscriptions.close_channel(channel_id)
        assert channel.closed_at is not None
        await self.fanout.close(channel_id, closed_notice(channel_id, channel.closed_at))
        if self.broker.distributed:
            await self.broker.publish(
                relay.encode_closed(self.node_id, channel_id, channel.closed_at)
            )
        return channel

    # -- background -----------------------------------------------------------------------

    async def flush(self, channel_id: str | None = None) -> None:
        """Write pending delivered/confirmed positions back to the database."""
        taken = self.fanout.take_positions(channel_id)
        try:
            await history.save_positions(taken)
        except Exception:
            for cid, (delivered, confirmed) in taken.items():  # kept for the next flush
                self.fanout.note_positions(cid, delivered=delivered, confirmed=confirmed)
            raise

    async def heartbeat(self) -> None:
        metrics.sample_process(len(self.sio.eio.sockets))
        await presence.heartbeat(self.node_id)
        dead = await presence.reap_dead_nodes(self.stale_after)
        if dead:
            log.warning("forgot the sockets of %d silent server process(es): %s", len(dead), dead)

    async def reconcile(self) -> None:
        """Catch local sockets up with events announced while no announcement reached us."""
        heads = await history.heads(self.fanout.channel_ids())
        for channel_id, (head, closed_at) in heads.items():
            if closed_at is not None:  # closed by another process while we were not told
                await self.fanout.close(channel_id, closed_notice(channel_id, closed_at))
            else:
                self.fanout.advance_head(channel_id, head)

    async def readiness(self) -> Readiness:
        """`ok`/`unavailable` per dependency (`not_configured` for an absent Redis), then the
        `readiness_checks` (the outbox: `ok`, `lagging` or `unavailable`)."""
        checks = {"database": "ok" if await database_reachable() else "unavailable"}
        if self.broker.distributed:
            checks["redis"] = "ok" if await self.broker.ping() else "unavailable"
        else:
            checks["redis"] = "not_configured"
        return combine(checks, self.readiness_checks)

    async def prune(self) -> None:
        removed = await history.prune(self.retention)
        if removed:
            log.info("pruned %d history entries beyond retention", removed)
