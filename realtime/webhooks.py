"""The fallback webhook dispatcher: POSTs, signed per Standard Webhooks, every event a
channel's subscriber has not confirmed within the fallback's `after_seconds`.

Each poll it writes back what its finished channels did, then leases channels with
something to look at (models.webhook_queue) up to its concurrency, and sends each one's due
webhooks in sequence order, one request at a time per channel. A confirmation that reaches
any process before an event falls due cancels its webhook: the dispatcher reads the
subscriber's confirmed cursor, plus what this process has not written back yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from standardwebhooks.webhooks import Webhook

from claims_realtime.models import history, webhook_queue
from claims_realtime.models.errors import InvalidInput
from claims_realtime.models.event import StoredEvent
from claims_realtime.models.fallbacks import WebhookPolicy
from claims_realtime.models.history import Retention
from claims_realtime.models.webhook_queue import Failure, Lease, Outcome
from claims_realtime.models.webhook_secrets import SecretUnreadable
from claims_realtime.models.webhook_urls import check_url, refused_address
from claims_realtime.realtime import metrics
from claims_realtime.realtime.protocol import envelope_json, prepare_fields

log = logging.getLogger(__name__)

#: Seconds before the first retries; then every last one until retry_for has passed.
BACKOFF = (5.0, 30.0, 120.0, 600.0, 3600.0)
#: Each wait is stretched or shrunk by up to this fraction, so retries spread out.
JITTER = 0.2
#: Events read per leased channel at a time.
WINDOW = 50
#: A webhook body's `type`.
EVENT_TYPE = "claim_event.unacknowledged"
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


def webhook_body(lease: Lease, event: StoredEvent) -> str:
    """The request body: the channel, and the event exactly in its socket envelope."""
    channel = json.dumps(
        {
            "channel_id": lease.channel_id,
            "subscription_type": lease.subscription_type,
            "user_id": lease.user_id,
            "organisation_id": lease.organisation_id,
        },
        separators=(",", ":"),
    )
    event_json = envelope_json(lease.channel_id, event.sequence, prepare_fields(event))
    return f'{{"type":"{EVENT_TYPE}","channel":{channel},"event":{event_json}}}'


def webhook_id(channel_id: str, sequence: int) -> str:
    """The same for every attempt at one event on one channel: receivers dedupe by it."""
    return f"{channel_id}.{sequence}"


class PublicOnlyResolver(AbstractResolver):
    """Resolves as usual, then keeps only public addresses, unless the host is allowed: a
    name checked when the fallback was set may point inside the network by now."""

    def __init__(self, allowed_hosts: tuple[str, ...]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed_hosts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if host.lower() in self._allowed:
            return found
        public = [r for r in found if not refused_address(ipaddress.ip_address(r["host"]))]
        if not public:
            # With an errno, aiohttp's connection error carries the text (its strerror).
            raise OSError(errno.EACCES, f"{host} resolves only to addresses that are not public")
        return public

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Attempt:
    """One request's result: the receiver's status, or why there was none."""

    status: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in (408, 425, 429) or self.status >= 500


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
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._housekeeping_at = 0.0

    async def start(self) -> None:
        if not self.policy.keys_agree:
            return  # it could open no secret (app.agreed logged why)
        connector = aiohttp.TCPConnector(
            resolver=PublicOnlyResolver(self.policy.allowed_hosts), limit=self.concurrency
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "claims-realtime"},
        )
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sending. Requests in flight are abandoned, their channels' leases left to
        expire (then any process sends them again); what finished is written back."""
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.settle()
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            full = False
            try:
                full = await self.poll()
            except Exception:
                log.exception("webhook poll failed; trying again in %.1f s", self.poll_interval)
            if full:
                # Every slot is taken and more may be due: poll again once some are free,
                # a moment later so that one poll refills many (each poll is a few writes).
                await asyncio.wait(
                    list(self._running.values()),
                    timeout=self.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                await asyncio.sleep(min(REFILL_DELAY, self.poll_interval))
            else:
                await asyncio.sleep(self.poll_interval)

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
        for lease in leases:
            self._running[lease.channel_id] = asyncio.create_task(self._work(lease))
        return len(self._running) >= self.concurrency

    async def _housekeeping(self) -> None:
        dropped = await webhook_queue.drop_closed()
        if dropped:
            metrics.WEBHOOKS_DROPPED.inc(dropped)
        owed, earliest = await webhook_queue.backlog()
        metrics.WEBHOOKS_OWED.set(owed)
        late = 0.0 if earliest is None else (self.clock() - earliest).total_seconds()
        metrics.WEBHOOK_OLDEST_DUE.set(max(0.0, late))

    async def _work(self, lease: Lease) -> None:
        outcome = Outcome(lease.channel_id, lease.cursor, lease.attempts, lease.first_attempt_at)
        try:
            await self._send_due(lease, outcome)
        except asyncio.CancelledError:
            raise  # stopping: the lease expires, and whoever holds it next sends again
        except Exception:
            log.exception("webhooks of channel %s failed; retrying", lease.channel_id)
            outcome.next_attempt_at = self.clock() + timedelta(seconds=BACKOFF[0])
        self._finished.append(outcome)
        del self._running[lease.channel_id]

    def _confirmed(self, lease: Lease) -> int:
        return max(lease.confirmed, self.confirmed_locally(lease.channel_id) or 0)

    async def _send_due(self, lease: Lease, outcome: Outcome) -> None:
        start = max(lease.cursor, self._confirmed(lease))
        events = await history.read_after(lease.channel_id, start, WINDOW, self.retention)
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
            if not await self._attempt(lease, event, outcome):
                return
        # The window is done: look again at once, behind channels that waited longer.
        outcome.next_attempt_at = self.clock()

    async def _attempt(self, lease: Lease, event: StoredEvent, outcome: Outcome) -> bool:
        """Send one webhook and note the outcome; answer whether to go on to the next."""
        attempt = await self._post(lease, event)
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

    async def _post(self, lease: Lease, event: StoredEvent) -> Attempt:
        assert self._session is not None
        try:
            check_url(lease.url, self.policy.allowed_hosts)  # a literal address skips DNS
            secret = self.policy.box.open(lease.sealed_secret)
        except InvalidInput as exc:
            return Attempt(None, exc.detail[:200])
        except SecretUnreadable as exc:
            log.error("cannot sign the webhooks of channel %s: %s", lease.channel_id, exc)
            return Attempt(None, "secret unreadable with WEBHOOK_SECRET_KEY")
        body = webhook_body(lease, event).encode()
        message_id = webhook_id(lease.channel_id, event.sequence)
        now = datetime.now(UTC)  # the wall clock: receivers check the timestamp against theirs
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, now, body),
        }
        started = time.perf_counter()
        try:
            async with self._session.post(
                lease.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                # The status is all that counts; the body is never read.
                return Attempt(response.status, None)
        except TimeoutError:
            return Attempt(None, f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt(None, (str(exc) or type(exc).__name__)[:200])
        finally:
            metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)
