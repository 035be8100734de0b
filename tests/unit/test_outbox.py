"""The outbox's pure parts: derived event ids, the lock key, the event check shared with
`POST /claim-events`, and how a batch the domain refuses a row of is recorded."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from claims_realtime.app import load_spec
from claims_realtime.models.errors import InvalidInput
from claims_realtime.models.outbox import OutboxRow, event_id_for, lock_key
from claims_realtime.realtime.outbox import OutboxConsumer
from claims_realtime.settings import MAX_BATCH_EVENTS
from claims_realtime.validation import body_problem, request_body_schema
from tests.helpers import PUBLISHER_KEY

#: ClaimEventInput.event_id's pattern and length, from the document.
EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
CREATED = datetime(2026, 3, 26, 8, 14, 22, 123456, tzinfo=UTC)


def check() -> Any:
    return functools.partial(
        body_problem, request_body_schema(load_spec(), "/claim-events", "post")
    )


def test_derived_event_ids_are_stable_valid_and_name_one_row() -> None:
    row = OutboxRow(41, {}, CREATED)
    derived = event_id_for("claims", "claims_realtime_outbox", row)
    assert derived == event_id_for(
        "claims", "claims_realtime_outbox", OutboxRow(41, {"x": 1}, CREATED)
    )
    assert derived.startswith("evt_outbox_") and EVENT_ID.fullmatch(derived)
    assert len(derived) <= 128
    others = {
        event_id_for("claims", "claims_realtime_outbox", OutboxRow(42, {}, CREATED)),
        event_id_for("claims2", "claims_realtime_outbox", row),
        event_id_for("claims", "other_outbox", row),
        # The same id again after the sequence restarted: another row, another event.
        event_id_for(
            "claims", "claims_realtime_outbox", OutboxRow(41, {}, CREATED.replace(year=2027))
        ),
    }
    assert derived not in others and len(others) == 4


def test_the_lock_key_is_a_bigint_of_the_table() -> None:
    key = lock_key("claims_realtime_outbox")
    assert -(2**63) <= key < 2**63
    assert key == lock_key("claims_realtime_outbox") != lock_key("other_outbox")


async def test_a_row_is_checked_as_post_claim_events_checks_its_body(
    api: httpx.AsyncClient,
) -> None:
    bad = {"event_type": "claim_exploded", "claim_id": "clm_1", "organisation_id": "org_1"}
    response = await api.post(
        "/api/v1/claim-events", json=bad, headers={"X-Publisher-Key": PUBLISHER_KEY}
    )
    assert response.status_code == 400
    assert check()(bad) == response.json()["detail"]
    good = {**bad, "event_type": "claim_approved", "user_id": "usr_1"}
    assert check()(good) is None
    assert check()([good]) is not None


def test_a_consumer_batch_is_at_most_what_the_batch_api_accepts() -> None:
    batch = load_spec()["components"]["schemas"]["ClaimEventBatch"]["properties"]["events"]
    assert batch["maxItems"] == MAX_BATCH_EVENTS


def unconnected(hub: Any) -> OutboxConsumer:
    """A consumer around `hub` that never connects: its recording and readiness alone."""
    return OutboxConsumer(
        hub,
        "postgres://unused",
        "claims_realtime_outbox",
        check=check(),
        poll_interval=1.0,
        batch_size=10,
    )


class FakeHub:
    """Refuses (as ingest would) any batch holding an event with `data.bad`."""

    def __init__(self) -> None:
        self.recorded: list[list[Mapping[str, Any]]] = []

    async def publish(self, events: Sequence[Mapping[str, Any]], *, batch: bool) -> list[Any]:
        assert batch
        for i, event in enumerate(events):
            if event["data"].get("bad"):
                raise InvalidInput(f"events.{i}.data", f"events.{i}.data is larger than 1 bytes")
        self.recorded.append(list(events))
        return []


async def test_a_row_the_domain_refuses_is_rejected_and_the_rest_recorded_in_order() -> None:
    hub = FakeHub()
    consumer = unconnected(hub)
    rows = [OutboxRow(i, {"data": {"n": i, "bad": i in (2, 4)}}, CREATED) for i in range(1, 6)]
    valid = [(row, dict(row.event)) for row in rows]
    rejected: list[tuple[int, str]] = []
    recording = await consumer._record(valid, rejected)
    assert recording.complete and [row.id for row in recording.rows] == [1, 3, 5]
    assert [[event["data"]["n"] for event in call] for call in hub.recorded] == [[1, 3, 5]]
    assert rejected == [(2, "data is larger than 1 bytes"), (4, "data is larger than 1 bytes")]


async def test_a_database_outage_keeps_every_row() -> None:
    class DownHub:
        async def publish(self, events: Any, *, batch: bool) -> list[Any]:
            raise OSError("connection refused")

    consumer = unconnected(DownHub())
    valid = [(OutboxRow(1, {}, CREATED), {"data": {}})]
    rejected: list[tuple[int, str]] = []
    recording = await consumer._record(valid, rejected)
    assert not recording.complete and recording.rows == [] and rejected == []


class BuggyHub(FakeHub):
    """Fails, as a bug would, on any batch holding an event with `data.boom`."""

    async def publish(self, events: Sequence[Mapping[str, Any]], *, batch: bool) -> list[Any]:
        if any(event["data"].get("boom") for event in events):
            raise RuntimeError("boom")
        return await super().publish(events, batch=batch)


async def test_a_row_that_fails_otherwise_holds_the_rows_behind_it_for_three_runs_only() -> None:
    hub = BuggyHub()
    consumer = unconnected(hub)
    waiting = [OutboxRow(i, {"data": {"n": i, "boom": i == 3}}, CREATED) for i in range(1, 6)]
    runs = []
    for _ in range(3):
        rejected: list[tuple[int, str]] = []
        recording = await consumer._record([(row, dict(row.event)) for row in waiting], rejected)
        runs.append(([row.id for row in recording.rows], recording.complete, rejected))
        gone = {row.id for row in recording.rows} | {row_id for row_id, _ in rejected}
        waiting = [row for row in waiting if row.id not in gone]
    assert runs == [
        ([1, 2], False, []),  # 3 and the rows behind it wait
        ([], False, []),
        ([4, 5], True, [(3, "failed to record 3 times: RuntimeError: boom")]),
    ]
    assert waiting == []
    # Each failed batch was tried again one event at a time, always in id order.
    assert [[event["data"]["n"] for event in call] for call in hub.recorded] == [[1], [2], [4], [5]]


@pytest.mark.parametrize("oldest, state", [(0.0, "ok"), (29.0, "ok"), (31.0, "lagging")])
def test_readiness_says_lagging_past_the_threshold(oldest: float, state: str) -> None:
    consumer = unconnected(FakeHub())
    assert consumer.readiness() == "unavailable"  # not connected yet
    consumer._connection = object()  # type: ignore[assignment]  # as if connected
    consumer._oldest = oldest
    assert consumer.readiness() == state


async def test_a_row_that_failed_once_and_then_passes_is_forgotten() -> None:
    class FlakyHub(FakeHub):
        failures = 2  # the batch, then the row alone

        async def publish(self, events: Sequence[Mapping[str, Any]], *, batch: bool) -> list[Any]:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("once")
            return await super().publish(events, batch=batch)

    consumer = unconnected(FlakyHub())
    row = OutboxRow(7, {"data": {"n": 7}}, CREATED)
    first = await consumer._record([(row, dict(row.event))], [])
    assert (first.rows, first.complete, consumer._attempts) == ([], False, {7: 1})
    second = await consumer._record([(row, dict(row.event))], [])
    assert (second.rows, second.complete, consumer._attempts) == ([row], True, {})
