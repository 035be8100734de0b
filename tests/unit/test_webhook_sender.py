"""The process that signs and POSTs webhooks, seen from the server: its death only delays
webhooks (they are answered as retryable, and the next one starts a new process), and
stopping the server leaves no process behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from claims_realtime.models.event import StoredEvent
from claims_realtime.models.webhook_queue import Lease
from claims_realtime.models.webhook_secrets import new_signing_secret
from claims_realtime.realtime.webhook_sender import WebhookSender
from tests.webhook_receiver import Receiver, running_receiver

SECRET = new_signing_secret()
CHANNEL = "chan_sender"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as found:
        found.secrets[CHANNEL] = SECRET
        yield found


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    found = WebhookSender(("127.0.0.1",), timeout=5.0, concurrency=4)
    try:
        yield found
    finally:
        await found.stop()


def lease(url: str) -> Lease:
    now = datetime.now(UTC)
    return Lease(
        CHANNEL, "user_claims", "usr_1", None, 9, 0, url, "sealed", 10,
        frozenset({"claim_approved"}), 0, 0, None, now,
    )  # fmt: skip


def event(sequence: int) -> StoredEvent:
    now = datetime.now(UTC)
    return StoredEvent(
        sequence, f"evt_{sequence}", "claim_approved", "clm_1", "org_1", "usr_1", None, now,
        '{"note":"line\\nbreak"}', now,
    )  # fmt: skip


async def test_webhooks_are_signed_and_sent_by_a_process_of_their_own(
    receiver: Receiver, sender: WebhookSender
) -> None:
    attempts = await asyncio.gather(
        *(sender.send(lease(receiver.url), event(s), SECRET) for s in (1, 2))
    )
    assert [a.status for a in attempts] == [204, 204]
    assert sorted(receiver.sequences(CHANNEL)) == [1, 2]  # each signature verified
    (request, _) = receiver.requests
    assert request["payload"]["event"]["data"] == {"note": "line\nbreak"}
    assert sender._process is not None and sender._process.pid is not None


async def test_a_killed_process_answers_retryable_and_the_next_webhook_starts_another(
    receiver: Receiver, sender: WebhookSender
) -> None:
    receiver.delay = 3.0  # held while the process is killed
    in_flight = asyncio.create_task(sender.send(lease(receiver.url), event(1), SECRET))
    while not receiver.in_flight.get(CHANNEL):
        await asyncio.sleep(0.01)
    killed = sender._process
    assert killed is not None
    killed.kill()

    attempt = await in_flight
    assert attempt.status is None and attempt.retryable
    assert attempt.error == "the webhook sending process exited"

    receiver.delay = 0.0
    again = await sender.send(lease(receiver.url), event(2), SECRET)
    assert again.delivered
    assert sender._process is not killed


async def test_stopping_ends_the_process(receiver: Receiver, sender: WebhookSender) -> None:
    assert (await sender.send(lease(receiver.url), event(1), SECRET)).delivered
    process = sender._process
    assert process is not None
    await sender.stop()
    assert process.returncode is not None
    assert sender._process is None
