"""An event's receipts (models.receipts.read_receipts): one per channel it was placed on,
delivered/acknowledged against the channel's written-back positions, paged by channel id;
unknown and expired events are EventNotFound."""

from __future__ import annotations

from datetime import timedelta

import pytest

from claims_realtime.models import history, ingest, receipts, subscriptions
from claims_realtime.models.channel import Channel, SubscriptionType
from claims_realtime.models.errors import EventNotFound
from claims_realtime.models.event import ClaimEvent
from claims_realtime.models.history import Retention
from tests.unit.test_history import KEEP_ALL

pytestmark = pytest.mark.usefixtures("db")


async def org_channels(count: int) -> list[str]:
    ids = []
    for i in range(count):
        created = await subscriptions.create_channel(
            SubscriptionType.ORGANISATION_CLAIMS, organisation_id="org_r", user_id=f"usr_{i}"
        )
        ids.append(created.channel.id)
    return sorted(ids)


async def publish(event_id: str) -> None:
    event = {
        "event_id": event_id,
        "event_type": "status_changed",
        "claim_id": "clm_1",
        "organisation_id": "org_r",
        "user_id": "usr_owner",
        "data": {"to": "approved"},
    }
    await ingest.record_events([event], max_data_bytes=1024, batch=False)


async def test_the_event_and_a_receipt_per_channel_by_channel_id() -> None:
    ids = await org_channels(3)
    await publish("evt_before")  # sequence 1 everywhere: the event below is 2
    await publish("evt_r1")

    found = await receipts.read_receipts("evt_r1", 1, 100, KEEP_ALL)

    assert found.event.event_id == "evt_r1" and found.event.data == {"to": "approved"}
    assert found.total == 3
    assert [r.channel_id for r in found.receipts] == ids
    assert {r.sequence for r in found.receipts} == {2}
    assert all(r.subscription_type == SubscriptionType.ORGANISATION_CLAIMS for r in found.receipts)
    assert not any(r.delivered or r.acknowledged for r in found.receipts)


@pytest.mark.parametrize(
    ("delivered", "confirmed", "flags"),
    [
        (None, None, (False, False)),
        (1, None, (False, False)),  # below the event's sequence
        (2, None, (True, False)),  # exactly at it
        (3, 2, (True, True)),
        (5, 1, (True, False)),
    ],
)
async def test_flags_follow_the_positions(
    delivered: int | None, confirmed: int | None, flags: tuple[bool, bool]
) -> None:
    (channel_id,) = await org_channels(1)
    await publish("evt_before")
    await publish("evt_r1")
    await Channel.filter(id=channel_id).update(
        delivered_sequence=delivered, confirmed_sequence=confirmed
    )

    (receipt,) = (await receipts.read_receipts("evt_r1", 1, 10, KEEP_ALL)).receipts

    assert receipt.sequence == 2
    assert (receipt.delivered, receipt.acknowledged) == flags


async def test_positions_saved_by_the_flush_show_as_receipts() -> None:
    first, second = await org_channels(2)
    await publish("evt_r1")
    await history.save_positions({first: (1, 1), second: (1, None)})

    found = await receipts.read_receipts("evt_r1", 1, 10, KEEP_ALL)

    assert [(r.delivered, r.acknowledged) for r in found.receipts] == [(True, True), (True, False)]


async def test_pages_split_the_receipts_and_keep_the_total() -> None:
    ids = await org_channels(5)
    await publish("evt_r1")

    pages = [await receipts.read_receipts("evt_r1", page, 2, KEEP_ALL) for page in (1, 2, 3, 4)]

    assert [[r.channel_id for r in p.receipts] for p in pages] == [ids[:2], ids[2:4], ids[4:], []]
    assert {p.total for p in pages} == {5}


async def test_an_event_on_no_channel_has_no_receipts() -> None:
    await publish("evt_nowhere")
    found = await receipts.read_receipts("evt_nowhere", 1, 10, KEEP_ALL)
    assert (found.receipts, found.total) == ([], 0)


async def test_an_unknown_event_is_not_found() -> None:
    with pytest.raises(EventNotFound) as raised:
        await receipts.read_receipts("evt_never", 1, 10, KEEP_ALL)
    assert raised.value.extensions() == {"field": "event_id"}


async def test_an_expired_event_is_not_found_before_and_after_prune() -> None:
    await org_channels(1)
    await publish("evt_old")
    event = await ClaimEvent.get(event_id="evt_old")
    await ClaimEvent.filter(event_id="evt_old").update(
        recorded_at=event.recorded_at - timedelta(hours=2)
    )
    with pytest.raises(EventNotFound):  # beyond the TTL: gone for reads already
        await receipts.read_receipts("evt_old", 1, 10, KEEP_ALL)

    await history.prune(Retention(max_events=1000, ttl_seconds=3600))

    assert not await ClaimEvent.exists(event_id="evt_old")
    with pytest.raises(EventNotFound):
        await receipts.read_receipts("evt_old", 1, 10, KEEP_ALL)
