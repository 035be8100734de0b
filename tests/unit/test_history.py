"""History bounds, positions and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise import Tortoise

from claims_realtime.models import history, ingest, subscriptions
from claims_realtime.models.channel import Channel, SubscriptionType
from claims_realtime.models.event import ClaimEvent, Feed
from claims_realtime.models.history import Retention
from claims_realtime.realtime.protocol import event_body, prepare, prepare_fields
from tests.helpers import age_history, placements

pytestmark = pytest.mark.usefixtures("db")

KEEP_ALL = Retention(max_events=1000, ttl_seconds=3600)


async def channel_with_events(count: int) -> Channel:
    created = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="usr_1")
    events: list[dict[str, Any]] = [
        {
            "event_type": "comment_added",
            "claim_id": f"c{i}",
            "organisation_id": "o",
            "user_id": "usr_1",
        }
        for i in range(count)
    ]
    if events:
        await ingest.record_events(events, max_data_bytes=1024, batch=True)
    await created.channel.refresh_from_db()
    return created.channel


async def record_one(channel: Channel) -> int:
    """Record one event for `channel`'s user; answer its sequence there."""
    event = {"event_type": "comment_added", "claim_id": "c", "organisation_id": "o"}
    (outcome,) = await ingest.record_events(
        [{**event, "user_id": channel.user_id}], max_data_bytes=1024, batch=False
    )
    ((_, sequence),) = outcome.placements
    return sequence


async def test_reads_kept_events_after_a_sequence_in_order() -> None:
    channel = await channel_with_events(5)
    rows = await history.read_after(channel.id, 2, 10, KEEP_ALL)
    assert [row.sequence for row in rows] == [3, 4, 5]
    assert rows[0].claim_id == "c2"
    assert [r.sequence for r in await history.read_after(channel.id, 0, 2, KEEP_ALL)] == [1, 2]


async def test_an_event_read_back_is_what_was_recorded_field_for_field() -> None:
    """read_after reads rows without the ORM: each field, times included, must come back as
    the ORM reads it, so that its envelope is byte for byte the one sent live."""
    created = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="usr_r")
    submitted = {
        "event_type": "status_changed",
        "claim_id": 'clm_\u00e9"x',
        "organisation_id": "org_r",
        "user_id": "usr_r",
        "actor_id": "usr_actor",
        "occurred_at": "2026-03-26T08:14:22.153Z",
        "data": {"from": "submitted", "to": "in_review", "note": "caf\u00e9 \u2603", "n": 1.5},
    }
    await ingest.record_events(
        [submitted, {**submitted, "actor_id": None}], max_data_bytes=1024, batch=True
    )
    rows = await history.read_after(created.channel.id, 0, 10, KEEP_ALL)
    assert [row.actor_id for row in rows] == ["usr_actor", None]
    for row in rows:
        stored = await ClaimEvent.get(event_id=row.event_id)
        assert row.occurred_at == stored.occurred_at
        assert row.occurred_at.utcoffset() == timedelta(0)
        assert prepare_fields(row) == prepare(event_body(stored))


async def test_first_available_honours_the_event_bound() -> None:
    channel = await channel_with_events(5)
    assert await history.first_available(channel, KEEP_ALL) == 1
    assert await history.first_available(channel, Retention(3, 3600)) == 3


async def test_first_available_honours_the_age_bound() -> None:
    channel = await channel_with_events(3)
    old = channel.created_at - timedelta(hours=2)
    await age_history(channel.id, old, up_to=2)
    assert await history.first_available(channel, KEEP_ALL) == 3
    assert [r.sequence for r in await history.read_after(channel.id, 0, 10, KEEP_ALL)] == [3]


async def test_nothing_available_means_after_the_head() -> None:
    channel = await channel_with_events(0)
    assert await history.first_available(channel, KEEP_ALL) == 1


async def test_prune_removes_only_what_retention_no_longer_keeps() -> None:
    channel = await channel_with_events(5)
    removed = await history.prune(Retention(max_events=2, ttl_seconds=3600))
    assert removed == 3
    remaining = [sequence for sequence, _ in await placements(channel.id)]
    assert sorted(remaining) == [4, 5]


async def test_prune_deletes_a_backlog_in_chunks_until_none_is_left() -> None:
    channel = await channel_with_events(25)
    old = channel.created_at - timedelta(hours=2)
    await age_history(channel.id, old, up_to=10)
    await ClaimEvent.filter(claim_id__in=[f"c{i}" for i in range(10)]).update(recorded_at=old)
    # 10 expired (chunks of 3: 3, 3, 3, 1), then 15 - 4 kept = 11 beyond the count bound.
    removed = await history.prune(Retention(max_events=4, ttl_seconds=3600), chunk=3)
    assert removed == 10 + 11
    remaining = [sequence for sequence, _ in await placements(channel.id)]
    assert sorted(remaining) == [22, 23, 24, 25]
    assert await ClaimEvent.filter(recorded_at__lt=channel.created_at).count() == 0
    assert await ClaimEvent.all().count() == 15


async def test_a_channel_keeps_its_head_when_all_its_history_expires() -> None:
    """Pruning never takes a channel's newest placement, and the next event goes on from
    the head rather than starting the numbering over."""
    channel = await channel_with_events(5)
    last_event_at = channel.last_event_at
    old = channel.created_at - timedelta(hours=2)
    await age_history(channel.id, old)
    await ClaimEvent.all().update(recorded_at=old)

    assert await history.prune(KEEP_ALL) == 4
    remaining = [sequence for sequence, _ in await placements(channel.id)]
    assert list(remaining) == [5]  # kept, but past the cutoff: no read returns it
    assert await history.read_after(channel.id, 0, 10, KEEP_ALL) == []
    assert await history.first_available(channel, KEEP_ALL) == 6

    reloaded = await subscriptions.find_channel(channel.id)
    assert reloaded.head_sequence == 5
    assert reloaded.last_event_at is not None and reloaded.last_event_at <= last_event_at
    assert await record_one(channel) == 6


async def test_the_head_column_still_counts_where_no_placement_is_left() -> None:
    """A database pruned before history kept each channel's newest placement may hold a
    channel whose head is only in its row (migrated: its feed's): its numbering goes on from
    there."""
    channel = await channel_with_events(0)
    await Feed.filter(id=channel.feed_id).update(head=7, last_event_at=channel.created_at)

    assert await history.heads([channel.id]) == {channel.id: (7, None)}
    await channel.refresh_from_db()
    assert (channel.head_sequence, channel.last_event_at) == (7, channel.created_at)
    assert await record_one(channel) == 8
    assert (await history.heads([channel.id]))[channel.id][0] == 8


async def test_heads_of_many_channels_in_one_call() -> None:
    channels = [
        (
            await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id=f"usr_{n}")
        ).channel
        for n in range(3)
    ]
    for n, channel in enumerate(channels):
        for _ in range(n):
            await record_one(channel)
    heads = await history.heads([c.id for c in channels] + ["chan_missing"])
    assert {cid: head for cid, (head, _) in heads.items()} == {
        channels[0].id: 0,
        channels[1].id: 1,
        channels[2].id: 2,
    }


@pytest.mark.sqlite
async def test_prune_does_not_scan_the_history_once_per_expired_event() -> None:
    # With channel_event.event_id a foreign key, deleting each expired claim event made
    # SQLite look for its placements with no index to do it: a scan of the whole history
    # per event. Counted in SQLite virtual-machine steps, not seconds.
    channel = await channel_with_events(2_000)
    expired = 50
    old = channel.created_at - timedelta(hours=2)
    first = [event_id for _, event_id in (await placements(channel.id))[:expired]]
    await age_history(channel.id, old, up_to=expired)
    await ClaimEvent.filter(event_id__in=first).update(recorded_at=old)
    removed, steps = await _prune_counting_steps(Retention(max_events=10_000, ttl_seconds=3600))
    assert removed == expired
    assert await ClaimEvent.filter(recorded_at__lt=channel.created_at).count() == 0
    assert len(await placements(channel.id)) == 2_000 - expired
    # Measured: 1,400 steps; with the scan per expired event (50 x 2,000 rows), 699,000.
    assert steps < 100_000, f"{steps} SQLite steps to prune {expired} events"


@pytest.mark.sqlite
async def test_a_prune_with_nothing_to_remove_does_not_read_the_history() -> None:
    await channel_with_events(2_000)
    removed, steps = await _prune_counting_steps(Retention(max_events=10_000, ttl_seconds=3600))
    assert removed == 0
    # Measured: under 100; reading every placement's index entry (the old overflow query), 16,000.
    assert steps < 2_000, f"{steps} SQLite steps for a prune that removed nothing"


async def _prune_counting_steps(retention: Retention) -> tuple[int, int]:
    """history.prune, and about how many SQLite virtual-machine steps it took."""
    calls = 0

    def count() -> int:
        nonlocal calls
        calls += 1
        return 0  # go on

    every = 100
    sqlite = Tortoise.get_connection("default")._connection  # type: ignore[attr-defined]
    await sqlite.set_progress_handler(count, every)
    try:
        removed = await history.prune(retention)
    finally:
        await sqlite.set_progress_handler(None, every)
    return removed, calls * every


async def test_positions_only_move_forward() -> None:
    channel = await channel_with_events(5)
    await history.save_positions({channel.id: (4, 2)})
    await history.save_positions({channel.id: (3, 1)})
    await channel.refresh_from_db()
    assert (channel.delivered_sequence, channel.confirmed_sequence) == (4, 2)
    assert channel.resume_sequence == 2  # a confirmation beats a mere write


async def test_positions_of_many_channels_go_each_to_its_own() -> None:
    channels = [await channel_with_events(1) for _ in range(4)]
    await history.save_positions({channels[0].id: (1, None), channels[1].id: (None, 1)})
    await history.save_positions({channels[0].id: (0, 1), channels[2].id: (1, 1)})
    for channel in channels:
        await channel.refresh_from_db()
    assert [(c.delivered_sequence, c.confirmed_sequence) for c in channels] == [
        (1, 1),
        (None, 1),
        (1, 1),
        (None, None),  # not written to
    ]


async def test_resume_point_falls_back_to_delivered_then_zero() -> None:
    channel = await channel_with_events(2)
    assert channel.resume_sequence == 0
    await history.save_positions({channel.id: (1, None)})
    await channel.refresh_from_db()
    assert channel.resume_sequence == 1


async def test_reading_many_channels_at_once_equals_reading_each() -> None:
    """read_after_each answers, per channel, what read_after does, in one query: with
    different starts, the limit, the age bound, a count of channels padded to a power of two
    and a channel with nothing after its start."""
    channels = {}
    for user, count in (("usr_a", 5), ("usr_b", 2), ("usr_c", 0)):
        created = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id=user)
        channels[user] = created.channel.id
        for _ in range(count):
            await record_one(created.channel)
    old = datetime.now(UTC) - timedelta(hours=2)
    await age_history(channels["usr_a"], old, after=1, up_to=2)
    starts = {channels["usr_a"]: 1, channels["usr_b"]: 0, channels["usr_c"]: 0}

    found = await history.read_after_each(starts, 3, KEEP_ALL)

    assert [e.sequence for e in found[channels["usr_a"]]] == [3, 4, 5]
    assert [e.sequence for e in found[channels["usr_b"]]] == [1, 2]
    assert found[channels["usr_c"]] == []
    for channel_id, after in starts.items():
        assert found[channel_id] == await history.read_after(channel_id, after, 3, KEEP_ALL)
    assert await history.read_after_each({}, 3, KEEP_ALL) == {}
