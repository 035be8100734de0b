"""Sending fallback webhooks: each body, and the process that signs and POSTs them.

The dispatcher (realtime.webhooks) decides what is sent when; WebhookSender builds each
request's body and hands it to a process of its own (realtime.webhook_process, started on
the first webhook), which signs it, POSTs it and answers the status. Signing, connecting and
parsing responses cost about a quarter of a core at a thousand webhooks a second; in the
server's process that work, on its event loop or on a thread contending for the GIL,
delayed socket frames and ingestion's commits (docs/performance-log.md, "Fallback
webhooks under load").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
from dataclasses import dataclass

from claims_realtime.models.event import StoredEvent
from claims_realtime.models.webhook_queue import Lease
from claims_realtime.realtime import metrics
from claims_realtime.realtime.protocol import envelope_json, prepare_fields
from claims_realtime.realtime.webhook_process import MAX_LINE_BYTES

log = logging.getLogger(__name__)

#: A webhook body's `type`.
EVENT_TYPE = "claim_event.unacknowledged"
#: Seconds past the request timeout to wait for the sending process's answer.
REPLY_SLACK_SECONDS = 5.0
#: Seconds the sending process has to exit once told to, before it is killed.
EXIT_GRACE_SECONDS = 3.0


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
    """Hands webhooks to the sending process and waits for their outcome (see the module
    docstring). The process is started on the first send, and again after it exits."""

    def __init__(self, allowed_hosts: tuple[str, ...], *, timeout: float, concurrency: int):
        self.options = json.dumps(
            {"timeout": timeout, "concurrency": concurrency, "allowed_hosts": allowed_hosts}
        )
        self.timeout = timeout
        self._process: asyncio.subprocess.Process | None = None
        self._replies: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Attempt]] = {}
        self._ids = itertools.count(1)
        self._starting = asyncio.Lock()

    async def send(self, lease: Lease, event: StoredEvent, secret: str) -> Attempt:
        process = await self._started()
        assert process.stdin is not None
        request_id = next(self._ids)
        request = {
            "id": request_id,
            "url": lease.url,
            "webhook_id": webhook_id(lease.channel_id, event.sequence),
            "secret": secret,
        }
        # The body follows on a line of its own: compact JSON holds no raw newline.
        body = webhook_body(lease, event)
        answered = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answered
        try:
            process.stdin.write(f"{json.dumps(request)}\n{body}\n".encode())
            await process.stdin.drain()
            return await asyncio.wait_for(answered, self.timeout + REPLY_SLACK_SECONDS)
        except (TimeoutError, ConnectionError) as exc:
            return Attempt(None, f"the webhook sending process did not answer ({exc!r})")
        finally:
            self._waiting.pop(request_id, None)

    async def stop(self) -> None:
        """Close the process's input (it abandons what is in flight and exits)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), EXIT_GRACE_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._replies is not None:
            await self._replies

    async def _started(self) -> asyncio.subprocess.Process:
        if self._process is not None:
            return self._process
        async with self._starting:
            if self._process is None:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "claims_realtime.realtime.webhook_process",
                    self.options,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=MAX_LINE_BYTES,
                )
                self._replies = asyncio.create_task(self._read_replies(self._process))
            return self._process

    async def _read_replies(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            reply = json.loads(line)
            metrics.WEBHOOK_SECONDS.observe(reply["seconds"])
            answered = self._waiting.get(reply["id"])
            if answered is not None and not answered.done():
                answered.set_result(Attempt(reply["status"], reply["error"]))
        # The process exited: the next webhook starts another, and what this one had not
        # answered is tried again later.
        exited_unasked = self._process is process
        if exited_unasked:
            self._process = None
        for answered in self._waiting.values():
            with contextlib.suppress(asyncio.InvalidStateError):
                answered.set_result(Attempt(None, "the webhook sending process exited"))
        if exited_unasked:
            log.warning("the webhook sending process exited (%s)", await process.wait())
