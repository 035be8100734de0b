"""Feeds under concurrency: channels of one organisation created and closed while its events
are recorded. What ingestion told the hub to deliver to a channel (its placements) must be
exactly what the channel's history holds, numbered 1, 2, 3 ... with no gap: an event is
either before a channel or wholly its own, and nothing after a close is the channel's.
On PostgreSQL these run on concurrent connections of the pool; on a SQLite file ingestion
runs in the writer process, which keeps routes between its transactions, while channels are
created and closed on this process's own connection."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from claims_realtime.models import ingest, subscriptions
from claims_realtime.models.channel import SubscriptionType
from tests.helpers import placements

pytestmark = pytest.mark.usefixtures("db")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "storage" in metafunc.fixturenames:
        on_postgres = metafunc.config.getoption("--database") == "postgres"
        metafunc.parametrize("storage", ["postgres"] if on_postgres else ["memory", "file"])


@pytest.fixture
def database_url(storage: str, database_url: str, tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'claims.sqlite3'}" if storage == "file" else database_url


ORGANISATION = "org_race"


async def publish(
    count: int,
    delivered: dict[str, list[tuple[int, str]]],
    *,
    pause: tuple[int, asyncio.Event] | None = None,
    recorded: tuple[int, asyncio.Event] | None = None,
) -> None:
    """Record `count` events of the organisation, one call each, noting every placement.
    `pause` waits for an event before the nth call; `recorded` sets one after n calls."""
    for n in range(count):
        if pause and n == pause[0]:
            await pause[1].wait()
        if recorded and n == recorded[0]:
            recorded[1].set()
        event = {
            "event_type": "comment_added",
            "claim_id": f"clm_{n}",
            "organisation_id": ORGANISATION,
            "user_id": f"usr_owner_{n}",
        }
        (outcome,) = await ingest.record_events([event], max_data_bytes=1024, batch=False)
        assert outcome.channels == len(outcome.placements)
        for channel_id, sequence in outcome.placements:
            delivered[channel_id].append((sequence, outcome.event.event_id))


async def create(
    count: int,
    created: list[str],
    *,
    close_every: int = 0,
    after: asyncio.Event | None = None,
    first_made: asyncio.Event | None = None,
) -> None:
    """Create `count` coordinator channels of the organisation, starting once `after` is set
    and setting `first_made` once one exists; with `close_every`, close every such channel
    again as soon as it exists."""
    if after:
        await after.wait()
    for n in range(count):
        made = await subscriptions.create_channel(
            SubscriptionType.ORGANISATION_CLAIMS, organisation_id=ORGANISATION, user_id=f"c{n}"
        )
        created.append(made.channel.id)
        if first_made:
            first_made.set()
        if close_every and n % close_every == 0:
            await asyncio.sleep(0)
            await subscriptions.close_channel(made.channel.id)


async def assert_delivered_is_stored(
    created: list[str], delivered: dict[str, list[tuple[int, str]]]
) -> None:
    for channel_id in created:
        stored = await placements(channel_id)
        assert [sequence for sequence, _ in stored] == list(range(1, len(stored) + 1))
        assert sorted(delivered.get(channel_id, [])) == stored
        channel = await subscriptions.find_channel(channel_id)
        assert channel.head_sequence == len(stored)


async def test_channels_created_while_events_are_recorded_get_exactly_their_own() -> None:
    created: list[str] = []
    delivered: dict[str, list[tuple[int, str]]] = defaultdict(list)
    await subscriptions.create_channel(
        SubscriptionType.ORGANISATION_CLAIMS, organisation_id=ORGANISATION, user_id="c_first"
    )
    # Which calls overlap is left to the scheduler, within two fixed points, so that the
    # counts below never depend on how fast the writer process starts.
    first_made, twenty_recorded = asyncio.Event(), asyncio.Event()
    await asyncio.gather(
        publish(80, delivered, pause=(40, first_made), recorded=(20, twenty_recorded)),
        create(30, created, first_made=first_made),
        create(30, created, after=twenty_recorded),
    )

    await assert_delivered_is_stored(created, delivered)
    # Later channels start later in the feed: one made before the 40th event saw at least
    # the last 40; none made after the 20th saw all 80.
    counts = [len(await placements(channel_id)) for channel_id in created]
    assert max(counts) >= 40 and min(counts) <= 60


async def test_channels_closed_while_events_are_recorded_keep_exactly_their_own() -> None:
    created: list[str] = []
    delivered: dict[str, list[tuple[int, str]]] = defaultdict(list)
    await asyncio.gather(publish(80, delivered), create(40, created, close_every=2))

    await assert_delivered_is_stored(created, delivered)
    closed = [
        c for c in created if (await subscriptions.find_channel(c)).closed_position is not None
    ]
    assert closed
    # A closed channel gets nothing more, however many events follow.
    before = {channel_id: await placements(channel_id) for channel_id in closed}
    await publish(5, delivered)
    assert {channel_id: await placements(channel_id) for channel_id in closed} == before
