"""Recording events: routing, per-channel sequences, idempotency, atomicity."""

from __future__ import annotations

import re
from typing import Any

import pytest
from tortoise import Tortoise

from claims_realtime.models import ingest, submission, subscriptions
from claims_realtime.models.backends import current
from claims_realtime.models.backends.sqlite import SQLiteBackend
from claims_realtime.models.channel import Channel, SubscriptionType
from claims_realtime.models.credentials import new_event_ids
from claims_realtime.models.errors import EventIdConflict, InvalidInput
from claims_realtime.models.event import ClaimEvent
from tests.helpers import age_history, placements

pytestmark = pytest.mark.usefixtures("db")

LIMIT = 16 * 1024


def claim_event(**overrides: Any) -> dict[str, Any]:
    return {
        "event_type": "status_changed",
        "claim_id": "clm_1",
        "organisation_id": "org_a",
        "user_id": "usr_owner",
        **overrides,
    }


async def record(*events: dict[str, Any], batch: bool = False) -> list[ingest.Recorded]:
    return await ingest.record_events(list(events), max_data_bytes=LIMIT, batch=batch)


async def org_channel(org: str = "org_a", **kw: Any) -> Channel:
    created = await subscriptions.create_channel(
        SubscriptionType.ORGANISATION_CLAIMS, organisation_id=org, user_id="usr_coord", **kw
    )
    return created.channel


async def user_channel(user: str = "usr_owner", **kw: Any) -> Channel:
    created = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id=user, **kw)
    return created.channel


async def placed(channel: Channel) -> list[tuple[int, str]]:
    return await placements(channel.id)


@pytest.mark.sqlite
async def test_times_are_stored_as_tortoise_itself_stores_them() -> None:
    # Ingestion binds each distinct time of a batch as text it converted once
    # (SQLiteBackend.bind_time): the batch's own time, and occurred_at (the batch's time when
    # the publisher gives none).
    owner = await user_channel()
    outcomes = await record(
        claim_event(event_id="e1"),
        claim_event(event_id="e2", occurred_at="2026-01-02T03:04:05.678+02:00"),
        batch=True,
    )
    connection = Tortoise.get_connection("default")

    async def stored() -> list[Any]:
        _, rows = await connection.execute_query(
            "SELECT e.event_id, e.occurred_at, e.recorded_at, ce.recorded_at FROM claim_event e "
            "JOIN feed_event ce ON ce.event_id = e.event_id ORDER BY e.event_id"
        )
        return [tuple(row) for row in rows]

    written = await stored()
    assert len(written) == 2 and written[0][1] == written[0][2] != written[1][1]
    for outcome in outcomes:
        event = outcome.event
        await ClaimEvent.filter(event_id=event.event_id).update(
            occurred_at=event.occurred_at, recorded_at=event.recorded_at
        )
    await age_history(owner.id, outcomes[0].event.recorded_at)
    assert await stored() == written


async def test_routes_by_organisation_owner_and_event_type() -> None:
    org = await org_channel()
    owner = await user_channel()
    comments_only = await org_channel(event_types=["comment_added"])
    other_org = await org_channel("org_b")
    other_user = await user_channel("usr_other")

    (outcome,) = await record(claim_event(event_id="e1"))

    assert outcome.channels == 2 and not outcome.duplicate
    assert {channel_id for channel_id, _ in outcome.placements} == {org.id, owner.id}
    for channel in (comments_only, other_org, other_user):
        assert await placed(channel) == []


async def test_sequences_are_per_channel_and_gap_free() -> None:
    org = await org_channel()
    owner = await user_channel()
    await record(
        claim_event(event_id="e1"), claim_event(event_id="e2", user_id="usr_x"), batch=True
    )
    await record(claim_event(event_id="e3"))

    assert await placed(org) == [(1, "e1"), (2, "e2"), (3, "e3")]
    assert await placed(owner) == [(1, "e1"), (2, "e3")]
    await org.refresh_from_db()
    assert org.head_sequence == 3 and org.event_count == 3 and org.last_event_at is not None


@pytest.mark.sqlite
async def test_on_sqlite_a_batch_is_a_handful_of_statements_whatever_its_size() -> None:
    """Each statement lets the GIL go while SQLite runs it, and under load taking it back
    from the event loop thread waits out the switch interval: the candidates come back as
    one row, each table is written by one statement (not one per power of two of the batch
    size), and a transaction with one call in it needs no savepoint."""
    owners = [await user_channel(f"usr_{i:02d}") for i in range(50)]
    orgs = [await org_channel() for _ in range(3)]
    statements: list[str] = []

    def trace(on: bool) -> Any:
        def install(db: Any) -> None:
            db.set_trace_callback((lambda sql: statements.append(sql.split()[0])) if on else None)

        backend = current()
        assert isinstance(backend, SQLiteBackend)
        return backend.transaction(install)

    await trace(True)
    statements.clear()  # the COMMIT of the transaction that installed it
    try:
        outcomes = await record(
            *(claim_event(user_id=f"usr_{i:02d}", claim_id=f"clm_{i}") for i in range(50)),
            batch=True,
        )
        ran = list(statements)
    finally:
        await trace(False)

    # The feeds' locks, then their channels (read after the locks: see models.ingest), then
    # one statement per table; one updates the touched feeds' heads (feed.head).
    assert ran == ["BEGIN", "SELECT", "SELECT", "INSERT", "INSERT", "WITH", "COMMIT"]
    assert [outcome.channels for outcome in outcomes] == [4] * 50  # its owner and 3 orgs
    for i, owner in enumerate(owners):
        assert await placed(owner) == [(1, outcomes[i].event.event_id)]
    for org in orgs:
        assert [sequence for sequence, _ in await placed(org)] == list(range(1, 51))
        await org.refresh_from_db()
        assert org.head_sequence == 50


async def test_closed_channels_and_later_channels_get_nothing() -> None:
    closed = await org_channel()
    await subscriptions.close_channel(closed.id)
    await record(claim_event(event_id="e1"))
    later = await org_channel()

    assert await placed(closed) == []
    assert await placed(later) == []


async def test_same_event_again_is_a_duplicate_recorded_once() -> None:
    org = await org_channel()
    (first,) = await record(claim_event(event_id="e1", data={"a": 1}))
    (again,) = await record(claim_event(event_id="e1", data={"a": 1}))

    assert again.duplicate and again.channels == first.channels == 1 and again.placements == ()
    assert await placed(org) == [(1, "e1")]


async def test_reused_event_id_with_other_content_is_a_conflict() -> None:
    await record(claim_event(event_id="e1"))
    with pytest.raises(EventIdConflict) as raised:
        await record(claim_event(event_id="e1", claim_id="clm_2"))
    assert raised.value.extensions() == {"field": "event_id"}


async def test_an_assigned_id_named_later_is_a_conflict_whatever_the_content() -> None:
    """An event recorded without an id keeps no fingerprint: a submission naming the id it
    was given is not the same submission (that one named none), as before."""
    (first,) = await record(claim_event())
    stored = await ClaimEvent.get(event_id=first.event.event_id)
    assert stored.fingerprint == submission.NO_FINGERPRINT

    with pytest.raises(EventIdConflict):
        await record(claim_event(event_id=first.event.event_id))
    named = claim_event(event_id="e1")
    (second,) = await record(named)
    assert (await ClaimEvent.get(event_id="e1")).fingerprint == second.event.fingerprint != ""
    assert (await record(named))[0].duplicate


async def test_a_batch_is_all_or_nothing() -> None:
    org = await org_channel()
    await record(claim_event(event_id="e1"))
    with pytest.raises(EventIdConflict) as raised:
        await record(
            claim_event(event_id="e2"), claim_event(event_id="e1", claim_id="other"), batch=True
        )
    assert raised.value.extensions() == {"field": "events.1.event_id"}
    assert await placed(org) == [(1, "e1")]
    assert await ClaimEvent.filter(event_id="e2").count() == 0


async def test_the_same_new_event_twice_in_a_batch_is_recorded_once() -> None:
    org = await org_channel()
    outcomes = await record(claim_event(event_id="e1"), claim_event(event_id="e1"), batch=True)
    assert [o.duplicate for o in outcomes] == [False, True]
    assert await placed(org) == [(1, "e1")]


async def test_data_over_the_limit_is_refused_naming_the_field() -> None:
    big = {"note": "x" * LIMIT}
    with pytest.raises(InvalidInput) as raised:
        await record(claim_event(), claim_event(data=big), batch=True)
    assert raised.value.field == "events.1.data"
    assert await ClaimEvent.all().count() == 0


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        # `{"note":"` + text + `"}` is 11 bytes of JSON around the text.
        ("x" * (LIMIT - 11), True),
        ("x" * (LIMIT - 10), False),
        # Counted in UTF-8 (2 bytes each), not as the stored \u00e9 escapes (6 each).
        ("é" * ((LIMIT - 11) // 2), True),
        ("é" * ((LIMIT - 11) // 2 + 1), False),
        # A literal backslash-u is not an escape of a non-ASCII character: 2 bytes of
        # JSON for the backslash, 1 for the u.
        ("\\u" * ((LIMIT - 11) // 3), True),
    ],
    ids=["ascii-at-limit", "ascii-over", "utf8-at-limit", "utf8-over", "backslash-u"],
)
async def test_data_size_is_its_compact_utf8_json(text: str, fits: bool) -> None:
    event = claim_event(data={"note": text})
    if fits:
        (outcome,) = await record(event)
        stored = await ClaimEvent.get(event_id=outcome.event.event_id)
        assert stored.data == {"note": text}  # stored whole, as sent
    else:
        with pytest.raises(InvalidInput) as raised:
            await record(event)
        assert raised.value.field == "data"


async def test_server_assigns_ids_and_keeps_occurred_at_in_utc() -> None:
    (outcome,) = await record(claim_event(occurred_at="2026-03-26T10:14:22+02:00"))
    stored = await ClaimEvent.get(event_id=outcome.event.event_id)
    assert stored.event_id.startswith("evt_")
    assert stored.occurred_at.isoformat() == "2026-03-26T08:14:22+00:00"


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+03:04", "9999-12-31T23:59:59-00:01"])
async def test_occurred_at_beyond_the_range_of_utc_is_refused_and_stores_nothing(
    moment: str,
) -> None:
    # Schemathesis found the first one: a 500 (an OverflowError converting it to UTC).
    with pytest.raises(InvalidInput) as raised:
        await record(claim_event(occurred_at=moment))
    assert raised.value.field == "occurred_at"
    assert "out of range" in str(raised.value)
    assert await ClaimEvent.all().count() == 0


async def test_occurred_at_without_offset_is_refused() -> None:
    with pytest.raises(InvalidInput) as raised:
        await record(claim_event(occurred_at="2026-03-26T10:14:22"))
    assert raised.value.field == "occurred_at"


async def test_every_event_without_an_id_gets_its_own() -> None:
    """Server-assigned ids come from one random read per batch, cut in pieces: each
    `evt_` + 24 of [a-z2-7], all different, and those the publisher gave are kept."""
    outcomes = await record(
        *[claim_event(claim_id=f"clm_{i}") for i in range(50)],
        claim_event(event_id="mine_1"),
        batch=True,
    )
    ids = [outcome.event.event_id for outcome in outcomes]
    assert ids[-1] == "mine_1"
    assert len(set(ids)) == 51
    assert all(re.fullmatch(r"evt_[a-z2-7]{24}", event_id) for event_id in ids[:-1]), ids
    assert await ClaimEvent.filter(event_id__in=ids).count() == 51


def test_assigned_ids_are_not_repeated_across_reads() -> None:
    first, second = new_event_ids(1000), new_event_ids(1000)
    assert len(set(first) | set(second)) == 2000
    assert all(re.fullmatch(r"evt_[a-z2-7]{24}", event_id) for event_id in first + second)
    assert new_event_ids(0) == []


def test_assigned_ids_sort_by_the_time_they_were_assigned() -> None:
    """Later ids sort after earlier ones (whatever their random part): new rows go to the end
    of the primary-key index."""
    moments = [0, 1, 31, 32, 1_000, 1_767_225_600_000, 1_767_225_600_001, 2**45 - 1]
    ids = [new_event_ids(2, now_ms=ms) for ms in moments]
    flat = [event_id for pair in ids for event_id in pair]
    for earlier, later in zip(ids, ids[1:], strict=False):
        assert max(earlier) < min(later)
    assert all(re.fullmatch(r"evt_[a-z2-7]{24}", event_id) for event_id in flat)
    # Within one millisecond the random part keeps them apart.
    assert len(set(new_event_ids(1000, now_ms=5))) == 1000


class Deadlock(Exception):
    """What asyncpg raises when PostgreSQL aborts a transaction to break a deadlock."""

    sqlstate = "40P01"


async def test_a_transaction_aborted_by_a_deadlock_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await org_channel()
    real = ingest._record
    attempts = 0

    async def deadlocked_once(*args: Any) -> list[ingest.Recorded]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("while recording") from Deadlock("deadlock detected")
        return await real(*args)

    monkeypatch.setattr(ingest, "_record", deadlocked_once)
    (outcome,) = await record(claim_event(event_id="evt_dl"))
    assert attempts == 2 and outcome.channels == 1 and not outcome.duplicate
    assert await ClaimEvent.filter(event_id="evt_dl").count() == 1


async def test_other_failures_are_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = 0

    async def failing(*args: Any) -> list[ingest.Recorded]:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("not a conflict")

    monkeypatch.setattr(ingest, "_record", failing)
    with pytest.raises(RuntimeError, match="not a conflict"):
        await record(claim_event())
    assert attempts == 1
