"""The fallback webhook dispatcher against a real HTTP receiver on loopback, which verifies
every signature with the `standardwebhooks` package.

The dispatcher's clock is moved on instead of waiting out deadlines; each test drives its
polls itself (`drain`), so what was sent when is exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from claims_realtime.models import history, ingest, subscriptions, webhook_queue
from claims_realtime.models.channel import SubscriptionType
from claims_realtime.models.fallback import WebhookFailure, WebhookFallback
from claims_realtime.models.fallbacks import FallbackSpec, WebhookPolicy, set_fallback
from claims_realtime.models.history import Retention
from claims_realtime.models.webhook_secrets import SecretBox, new_sealing_key
from claims_realtime.realtime.webhooks import BACKOFF, WebhookDispatcher
from tests.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.usefixtures("db")

KEEP_ALL = Retention(max_events=1000, ttl_seconds=3600)
AFTER = 10  # seconds: the fallbacks' deadline


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as found:
        yield found


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


POLICY = WebhookPolicy(SecretBox([new_sealing_key()]), allowed_hosts=("127.0.0.1",))


@pytest.fixture
async def clock() -> Clock:
    return Clock()


def dispatcher(clock: Clock, node_id: str = "node_a", **overrides: Any) -> WebhookDispatcher:
    options: dict[str, Any] = {
        "node_id": node_id,
        "timeout": 2.0,
        "concurrency": 8,
        "poll_interval": 0.05,
        "retry_for": 3600.0,
        "clock": clock,
        **overrides,
    }
    return WebhookDispatcher(POLICY, KEEP_ALL, **options)


@pytest.fixture
async def sender(clock: Clock) -> AsyncIterator[WebhookDispatcher]:
    found = dispatcher(clock)
    await found.start()
    found._task.cancel()  # type: ignore[union-attr]  # polls are driven by the tests
    try:
        yield found
    finally:
        await found.stop()


async def drain(*senders: WebhookDispatcher, polls: int = 3) -> None:
    """Poll until no channel is being worked on, then a few more times."""
    for _ in range(polls):
        for sender in senders:
            await sender.poll()
        while any(sender._running for sender in senders):
            await asyncio.gather(*(t for s in senders for t in list(s._running.values())))
    for sender in senders:
        await sender.settle()


async def channel_with_fallback(receiver: Receiver, user: str = "usr_1", **spec: Any) -> str:
    created = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id=user)
    channel_id = created.channel.id
    found = await set_fallback(
        channel_id,
        FallbackSpec(url=spec.pop("url", receiver.url), after_seconds=AFTER, **spec),
        POLICY,
    )
    receiver.secrets[channel_id] = found.secret
    return channel_id


async def publish(user: str, count: int = 1, event_type: str = "claim_approved") -> list[str]:
    events = [
        {
            "event_type": event_type,
            "claim_id": f"clm_{i}",
            "organisation_id": "org_1",
            "user_id": user,
        }
        for i in range(count)
    ]
    outcomes = await ingest.record_events(events, max_data_bytes=1024, batch=True)
    return [outcome.event.event_id for outcome in outcomes]


async def test_exactly_the_unconfirmed_events_fire_once_each_after_the_deadline(
    receiver: Receiver, clock: Clock, sender: WebhookDispatcher
) -> None:
    channel_id = await channel_with_fallback(receiver)
    event_ids = await publish("usr_1", 4)
    await history.save_positions({channel_id: (4, 2)})  # the app confirmed 1 and 2

    await drain(sender)
    assert receiver.requests == [], "nothing is due before after_seconds"

    clock.advance(AFTER + 1)
    await drain(sender)
    assert receiver.sequences() == [3, 4]
    assert [r["id"] for r in receiver.requests] == [f"{channel_id}.3", f"{channel_id}.4"]
    first = receiver.requests[0]["payload"]
    assert first["type"] == "claim_event.unacknowledged"
    assert first["channel"] == {
        "channel_id": channel_id,
        "subscription_type": "user_claims",
        "user_id": "usr_1",
        "organisation_id": None,
    }
    (stored,) = await history.read_after(channel_id, 2, 1, KEEP_ALL)
    assert first["event"]["event_id"] == event_ids[2] == stored.event_id
    assert (first["event"]["channel_id"], first["event"]["sequence"]) == (channel_id, 3)

    clock.advance(3600)
    await drain(sender)
    assert receiver.sequences() == [3, 4], "each once"
    fallback = await WebhookFallback.get(channel_id=channel_id)
    assert (fallback.cursor, fallback.sent, fallback.last_status) == (4, 2, 204)


async def test_events_before_the_fallback_and_of_other_types_never_fire(
    receiver: Receiver, clock: Clock, sender: WebhookDispatcher
) -> None:
    created = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="usr_2")
    await publish("usr_2", 2)
    found = await set_fallback(
        created.channel.id,
        FallbackSpec(url=receiver.url, after_seconds=AFTER, event_types=["claim_approved"]),
        POLICY,
    )
    receiver.secrets[created.channel.id] = found.secret
    await publish("usr_2", 1, "comment_added")
    await publish("usr_2", 1, "claim_approved")
    clock.advance(AFTER + 1)
    await drain(sender)
    assert receiver.sequences() == [4]


async def test_a_confirmation_before_the_deadline_cancels_the_webhook(
    receiver: Receiver, clock: Clock
) -> None:
    confirmed: dict[str, int] = {}
    local = dispatcher(clock, confirmed_locally=confirmed.get)
    await local.start()
    local._task.cancel()  # type: ignore[union-attr]
    try:
        channel_id = await channel_with_fallback(receiver, "usr_3")
        await publish("usr_3", 3)
        confirmed[channel_id] = 2  # confirmed here, not yet written back
        clock.advance(AFTER + 1)
        await drain(local)
        assert receiver.sequences() == [3]
    finally:
        await local.stop()


async def test_server_errors_are_retried_with_backoff_under_the_same_webhook_id(
    receiver: Receiver, clock: Clock, sender: WebhookDispatcher
) -> None:
    channel_id = await channel_with_fallback(receiver, "usr_4")
    await publish("usr_4", 2)
    receiver.answers = [500, 503]
    clock.advance(AFTER + 1)
    await drain(sender)
    assert receiver.sequences() == [1], "one attempt, then it waits"
    fallback = await WebhookFallback.get(channel_id=channel_id)
    assert (fallback.attempts, fallback.last_status, fallback.cursor) == (1, 500, 0)
    assert fallback.next_attempt_at is not None

    clock.advance(BACKOFF[0] * 1.3)
    await drain(sender)
    assert receiver.sequences() == [1, 1]
    clock.advance(BACKOFF[1] * 1.3)
    await drain(sender)
    assert receiver.sequences() == [1, 1, 1, 2], "in order: 2 waits for 1"
    assert {r["id"] for r in receiver.requests[:3]} == {f"{channel_id}.1"}
    fallback = await WebhookFallback.get(channel_id=channel_id)
    assert (fallback.attempts, fallback.cursor, fallback.sent, fallback.failed) == (0, 2, 2, 0)


async def test_a_receiver_that_is_down_then_up_gets_everything(
    receiver: Receiver, clock: Clock, sender: WebhookDispatcher
) -> None:
    closed_port = receiver.url.replace("/hook", "").rsplit(":", 1)[1]
    down = receiver.url.replace(closed_port, "9")  # discard port: nothing listens
    channel_id = await channel_with_fallback(receiver, "usr_5", url=down)
    await publish("usr_5", 2)
    clock.advance(AFTER + 1)
    await drain(sender)
    fallback = await WebhookFallback.get(channel_id=channel_id)
    assert (fallback.attempts, fallback.last_status) == (1, None)
    assert fallback.last_error

    await WebhookFallback.filter(channel_id=channel_id).update(url=receiver.url)
    clock.advance(BACKOFF[0] * 1.3)
    await drain(sender)
    assert receiver.sequences() == [1, 2]


async def test_gone_disables_and_other_client_errors_are_final(
    receiver: Receiver, clock: Clock, sender: WebhookDispatcher
) -> None:
    failing = await channel_with_fallback(receiver, "usr_6")
    await publish("usr_6", 2)
    receiver.answers = [400]
    clock.advance(AFTER + 1)
    await drain(sender)
    assert receiver.sequences() == [1, 2], "a 400 is final: the next one goes on"
    (failure,) = await WebhookFailure.filter(channel_id=failing)
    assert (failure.sequence, failure.attempts, failure.last_status) == (1, 1, 400)

    gone = await channel_with_fallback(receiver, "usr_7")
    await publish("usr_7", 2)
    receiver.answers = [410]
    clock.advance(AFTER + 1)
    await drain(sender)
    assert receiver.sequences(gone) == [1]
    fallback = await WebhookFallback.get(channel_id=gone)
    assert fallback.disabled_at is not None
    await publish("usr_7", 1)
    clock.advance(AFTER + 1)
    await drain(sender)
    assert receiver.sequences(gone) == [1], "disabled: nothing more"


async def test_retries_end_after_retry_for_as_a_kept_failure(
    receiver: Receiver, clock: Clock
) -> None:
    short = dispatcher(clock, retry_for=60.0)
    await short.start()
    short._task.cancel()  # type: ignore[union-attr]
    try:
        channel_id = await channel_with_fallback(receiver, "usr_8")
        await publish("usr_8", 2)
        receiver.answers = [500] * 10
        clock.advance(AFTER + 1)
        for _ in range(4):
            await drain(short)
            clock.advance(BACKOFF[1] * 1.3)
        (failure,) = await WebhookFailure.filter(channel_id=channel_id)
        assert failure.sequence == 1 and failure.last_status == 500 and failure.attempts >= 2
        assert receiver.sequences()[-1] == 2, "then the next event goes"
    finally:
        await short.stop()


async def test_a_closed_channel_drops_what_it_owed(
    receiver: Receiver, clock: Clock, sender: WebhookDispatcher
) -> None:
    channel_id = await channel_with_fallback(receiver, "usr_9")
    await publish("usr_9", 3)
    await subscriptions.close_channel(channel_id)
    clock.advance(AFTER + 1)
    await drain(sender)
    assert receiver.requests == []
    assert not await WebhookFallback.filter(channel_id=channel_id).exists()


async def test_two_processes_send_each_webhook_once_in_order_one_at_a_time(
    receiver: Receiver, clock: Clock
) -> None:
    senders = [dispatcher(clock, node_id=name) for name in ("node_a", "node_b")]
    for sender in senders:
        await sender.start()
        sender._task.cancel()  # type: ignore[union-attr]
    try:
        channels = [await channel_with_fallback(receiver, f"usr_m{i}") for i in range(6)]
        for i in range(6):
            await publish(f"usr_m{i}", 5)
        clock.advance(AFTER + 1)
        for _ in range(4):
            await asyncio.gather(*(sender.poll() for sender in senders))
            await asyncio.gather(*(t for s in senders for t in list(s._running.values())))
        await drain(*senders)
        for channel_id in channels:
            assert receiver.sequences(channel_id) == [1, 2, 3, 4, 5]
        assert receiver.overlapping == 0
    finally:
        for sender in senders:
            await sender.stop()


async def test_a_process_that_dies_holding_a_lease_only_delays_the_webhook(
    receiver: Receiver, clock: Clock, sender: WebhookDispatcher
) -> None:
    channel_id = await channel_with_fallback(receiver, "usr_d")
    await publish("usr_d", 1)
    clock.advance(AFTER + 1)
    (lease,) = await webhook_queue.lease_due("dead_node", clock(), 10, 60.0)
    assert lease.channel_id == channel_id
    await drain(sender)
    assert receiver.requests == [], "leased by the dead process"
    clock.advance(61)
    await drain(sender)
    assert receiver.sequences() == [1]


async def test_a_host_resolving_to_a_private_address_is_refused_when_sending(
    receiver: Receiver, clock: Clock, sender: WebhookDispatcher
) -> None:
    channel_id = await channel_with_fallback(receiver, "usr_s")
    # Set while allowed; the address is no longer allowed when it is sent.
    await WebhookFallback.filter(channel_id=channel_id).update(
        url=receiver.url.replace("http://127.0.0.1", "https://localhost")
    )
    await publish("usr_s", 1)
    clock.advance(AFTER + 1)
    await drain(sender)
    assert receiver.requests == []
    fallback = await WebhookFallback.get(channel_id=channel_id)
    assert fallback.attempts == 1 and "not public" in (fallback.last_error or "")


async def test_concurrent_leases_never_share_a_channel(receiver: Receiver, clock: Clock) -> None:
    channels = {await channel_with_fallback(receiver, f"usr_l{i}") for i in range(20)}
    for i in range(20):
        await publish(f"usr_l{i}", 1)
    clock.advance(AFTER + 1)
    for _ in range(5):
        taken = await asyncio.gather(
            *(webhook_queue.lease_due(f"node_{n}", clock(), 20, 30.0) for n in range(4))
        )
        ids = [lease.channel_id for leases in taken for lease in leases]
        assert len(ids) == len(set(ids)) == len(channels), "each channel leased exactly once"
        clock.advance(31)  # every lease expires: all are due again


async def test_more_due_channels_than_slots_are_served_without_waiting_for_the_next_poll(
    receiver: Receiver, clock: Clock
) -> None:
    busy = dispatcher(clock, concurrency=2, poll_interval=5.0)
    for i in range(6):
        await channel_with_fallback(receiver, f"usr_c{i}")
        await publish(f"usr_c{i}", 1)
    clock.advance(AFTER + 1)
    await busy.start()  # its own loop this time
    try:
        deadline = time.monotonic() + 3  # well within one poll interval
        while len(receiver.requests) < 6:
            assert time.monotonic() < deadline, f"{len(receiver.requests)} of 6"
            await asyncio.sleep(0.02)
    finally:
        await busy.stop()
