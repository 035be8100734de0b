"""The fallback webhook dispatcher: POSTs, signed per Standard Webhooks, every event a
channel's subscriber has not confirmed within the fallback's `after_seconds`.

Each poll it writes back what its finished channels did, then leases channels with
something to look at (models.webhook_queue) up to its concurrency, reads their windows of
events in one query, and sends each one's due webhooks in sequence order, one request at a
time per channel, through the sending process (realtime.webhook_sender). A confirmation that reaches
any process before an event falls due cancels its webhook: the dispatcher reads the
subscriber's confirmed cursor, plus what this process has not written back yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from claims_realtime.models import history, webhook_queue
from claims_realtime.models.event import StoredEvent
from claims_realtime.models.fallbacks import WebhookPolicy
from claims_realtime.models.history import Retention
from claims_realtime.models.webhook_queue import Failure, Lease, Outcome
from claims_realtime.models.webhook_secrets import SecretUnreadable
from claims_realtime.realtime import metrics, stopping
from claims_realtime.realtime.webhook_sender import Attempt, WebhookSender

log = logging.getLogger(__name__)

#: Seconds before the first retries; then every last one until retry_for has passed.
BACKOFF = (5.0, 30.0, 120.0, 600.0, 3600.0)
#: Each wait is stretched or shrunk by up to this fraction, so retries spread out.
JITTER = 0.2
#: Events read per leased channel at a time.
WINDOW = 50
#: The shortest lease on a channel's webhooks (see WebhookDispatcher.lease_seconds).
MIN_LEASE_SECONDS = 15.0
#: Closed channels' fallbacks are cleared, and the backlog gauges read, every this many poll
#: intervals.
HOUSEKEEPING_POLLS = 10
#: After a slot frees up while channels wait, how long to let others free up before polling.
REFILL_DELAY = 0.05


def backoff(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1-based), with jitter."""
    base = BACKOFF[min(attempts, len(BACKOFF)) - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)


class WebhookDispatcher:
    """Sends this process's share of due fallback webhooks (see the module docstring)."""

    def __init__(
        self,
        policy: WebhookPolicy,
        retention: Retention,
        *,
        node_id: str,
        timeout: float,
        concurrency: int,
        poll_interval: float,
        retry_for: float,
        confirmed_locally: Callable[[str], int | None] = lambda _channel_id: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy
        self.retention = retention
        self.node_id = node_id
        self.timeout = timeout
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.retry_for = retry_for
        self.confirmed_locally = confirmed_locally
        #: The time deadlines are measured against (tests move it on).
        self.clock = clock
        #: Renewed at every poll while a channel is worked on: a process that dies holding
        #: a lease delays that channel by about this long.
        self.lease_seconds = max(MIN_LEASE_SECONDS, 3 * timeout, 5 * poll_interval)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._finished: list[Outcome] = []
        self._sender = WebhookSender(policy.allowed_hosts, timeout=timeout, concurrency=concurrency)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._housekeeping_at = 0.0

    async def start(self) -> None:
        if not self.policy.keys_agree:
            return  # it could open no secret (app.agreed logged why)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sending. The poll under way finishes; requests in flight are abandoned,
        their channels' leases left to expire (then any process sends them again); what
        finished is written back."""
        self._stopping.set()
        if self._task is not None:
            await stopping.finish([self._task])
        # Sending holds no transaction: these may be cancelled anywhere.
        await stopping.finish(list(self._running.values()), grace=0)
        with contextlib.suppress(Exception):
            await self.settle()
        await self._sender.stop()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            full = False
            try:
                full = await self.poll()
            except Exception:
                log.exception("webhook poll failed; trying again in %.1f s", self.poll_interval)
            if full:
                # Every slot is taken and more may be due: poll again once some are free,
                # a moment later so that one poll refills many (each poll is a few writes).
                asked_to_stop = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait(
                    [*self._running.values(), asked_to_stop],
                    timeout=self.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                asked_to_stop.cancel()
                await stopping.pause(self._stopping, min(REFILL_DELAY, self.poll_interval))
            else:
                await stopping.pause(self._stopping, self.poll_interval)

    async def settle(self) -> None:
        """Write back what finished channels did, and give their leases up."""
        finished, self._finished = self._finished, []
        try:
            await webhook_queue.settle(self.node_id, finished)
        except Exception:
            self._finished[:0] = finished  # kept (and the leases held) for the next poll
            raise

    async def poll(self) -> bool:
        """Write back, renew, and take on due channels up to the concurrency; answer whether
        every slot is now taken (more channels may be waiting)."""
        await self.settle()
        await webhook_queue.renew(
            self.node_id,
            list(self._running),
            self.clock() + timedelta(seconds=self.lease_seconds),
        )
        if time.monotonic() >= self._housekeeping_at:
            self._housekeeping_at = time.monotonic() + HOUSEKEEPING_POLLS * self.poll_interval
            await self._housekeeping()
        free = self.concurrency - len(self._running)
        leases = await webhook_queue.lease_due(self.node_id, self.clock(), free, self.lease_seconds)
        starts = {lease.channel_id: max(lease.cursor, self._confirmed(lease)) for lease in leases}
        windows = await history.read_after_each(starts, WINDOW, self.retention)
        for lease in leases:
            start = starts[lease.channel_id]
            work = self._work(lease, start, windows[lease.channel_id])
            self._running[lease.channel_id] = asyncio.create_task(work)
        return len(self._running) >= self.concurrency

    async def _housekeeping(self) -> None:
        dropped = await webhook_queue.drop_closed()
        if dropped:
            metrics.WEBHOOKS_DROPPED.inc(dropped)
        owed, earliest = await webhook_queue.backlog()
        metrics.WEBHOOKS_OWED.set(owed)
        late = 0.0 if earliest is None else (self.clock() - earliest).total_seconds()
        metrics.WEBHOOK_OLDEST_DUE.set(max(0.0, late))

    async def _work(self, lease: Lease, start: int, events: list[StoredEvent]) -> None:
        outcome = Outcome(lease.channel_id, lease.cursor, lease.attempts, lease.first_attempt_at)
        try:
            await self._send_due(lease, start, events, outcome)
        except asyncio.CancelledError:
            raise  # stopping: the lease expires, and whoever holds it next sends again
        except Exception:
            log.exception("webhooks of channel %s failed; retrying", lease.channel_id)
            outcome.next_attempt_at = self.clock() + timedelta(seconds=BACKOFF[0])
        self._finished.append(outcome)
        del self._running[lease.channel_id]

    def _confirmed(self, lease: Lease) -> int:
        return max(lease.confirmed, self.confirmed_locally(lease.channel_id) or 0)

    async def _send_due(
        self, lease: Lease, start: int, events: list[StoredEvent], outcome: Outcome
    ) -> None:
        """Send the lease's due webhooks among `events`, the window of its channel's events
        after `start` (its cursor, or the subscriber's confirmed cursor if further on)."""
        try:
            secret = self.policy.box.open(lease.sealed_secret)
        except SecretUnreadable as exc:
            log.error("cannot sign the webhooks of channel %s: %s", lease.channel_id, exc)
            secret = None
        if not events:
            # Nothing kept after `start` though the head is past it: retention took them.
            metrics.WEBHOOKS_DROPPED.inc(max(0, lease.head - start))
            outcome.cursor = max(outcome.cursor, lease.head)
            return
        expected = start + 1
        for event in events:
            if event.sequence > expected:  # retention took these before they were sent
                metrics.WEBHOOKS_DROPPED.inc(event.sequence - expected)
            expected = event.sequence + 1
            if event.event_type not in lease.event_types or event.sequence <= self._confirmed(
                lease
            ):
                outcome.cursor = event.sequence  # not owed: another type, or confirmed since
                continue
            due = event.recorded_at + timedelta(seconds=lease.after_seconds)
            now = self.clock()
            if due > now:
                outcome.next_attempt_at = due
                return
            if not await self._attempt(lease, event, secret, outcome):
                return
        # The window is done: look again at once, behind channels that waited longer.
        outcome.next_attempt_at = self.clock()

    async def _attempt(
        self, lease: Lease, event: StoredEvent, secret: str | None, outcome: Outcome
    ) -> bool:
        """Send one webhook and note the outcome; answer whether to go on to the next."""
        if secret is None:
            attempt = Attempt(None, "secret unreadable with WEBHOOK_SECRET_KEY")
        else:
            attempt = await self._sender.send(lease, event, secret)
        now = self.clock()
        outcome.last_attempt_at, outcome.last_status = now, attempt.status
        outcome.last_error = attempt.error
        outcome.attempts += 1
        outcome.first_attempt_at = outcome.first_attempt_at or now
        if attempt.delivered:
            metrics.WEBHOOKS_DELIVERED.inc()
            outcome.sent += 1
        elif attempt.gone:
            metrics.WEBHOOKS_DISABLED.inc()
            outcome.disabled_at = now
            log.warning("fallback of channel %s disabled: its URL answered 410", lease.channel_id)
            return False
        elif attempt.retryable and now - outcome.first_attempt_at < timedelta(
            seconds=self.retry_for
        ):
            metrics.WEBHOOKS_RETRIED.inc()
            outcome.next_attempt_at = now + timedelta(seconds=backoff(outcome.attempts))
            return False
        else:
            metrics.WEBHOOKS_FAILED.inc()
            outcome.failures.append(
                Failure(
                    event.sequence,
                    event.event_id,
                    outcome.attempts,
                    attempt.status,
                    attempt.error,
                    now,
                )
            )
        outcome.cursor = event.sequence
        outcome.attempts, outcome.first_attempt_at = 0, None
        return True
