"""Sending one fallback webhook: its body, its Standard Webhooks signature and the POST.

The requests run on a thread with an event loop of its own (WebhookSender). The loop that
writes to the sockets then only hands requests over and takes results back; building,
signing, connecting and parsing responses happen beside it, so a thousand webhooks a second
no longer queue socket frames behind them. The dispatcher (realtime.webhooks) decides what
is sent when.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from standardwebhooks.webhooks import Webhook

from claims_realtime.models.errors import InvalidInput
from claims_realtime.models.event import StoredEvent
from claims_realtime.models.webhook_queue import Lease
from claims_realtime.models.webhook_urls import check_url, refused_address
from claims_realtime.realtime import metrics
from claims_realtime.realtime.protocol import envelope_json, prepare_fields

#: A webhook body's `type`.
EVENT_TYPE = "claim_event.unacknowledged"

T = TypeVar("T")


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


class WebhookSender:
    """POSTs signed webhooks from its own thread and event loop (see the module docstring).

    `send` is called from the dispatcher's loop; cancelling it cancels the request.
    """

    def __init__(self, allowed_hosts: tuple[str, ...], *, timeout: float, concurrency: int):
        self.allowed_hosts = allowed_hosts
        self.timeout = timeout
        self.concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="webhook-sender", daemon=True)
        self._loop = loop
        self._thread.start()
        await self._there(self._open())

    async def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            await self._there(self._close())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)
            loop.close()
            self._loop = self._thread = None

    async def send(self, lease: Lease, event: StoredEvent, secret: str) -> Attempt:
        return await self._there(self._post(lease, event, secret))

    async def _there(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the sender's loop and wait for it from this one."""
        assert self._loop is not None, "the sender is not started"
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    async def _open(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=PublicOnlyResolver(self.allowed_hosts), limit=self.concurrency
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "claims-realtime"},
        )

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, lease: Lease, event: StoredEvent, secret: str) -> Attempt:
        assert self._session is not None
        try:
            check_url(lease.url, self.allowed_hosts)  # a literal address skips DNS
        except InvalidInput as exc:
            return Attempt(None, exc.detail[:200])
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
