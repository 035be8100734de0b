"""The cross-process message: each event once, per channel only its sequences."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from claims_realtime.models.event import ClaimEvent
from claims_realtime.models.ingest import Recorded
from claims_realtime.realtime import relay
from claims_realtime.realtime.protocol import event_body


def recorded(event_id: str, *placements: tuple[str, int], duplicate: bool = False) -> Recorded:
    event = ClaimEvent(
        event_id=event_id,
        event_type="comment_added",
        claim_id="clm_1",
        organisation_id="org",
        user_id="usr",
        actor_id=None,
        occurred_at=datetime(2026, 3, 26, tzinfo=UTC),
        recorded_at=datetime(2026, 3, 26, tzinfo=UTC),
        data={"n": 1},
        fingerprint="f",
        channel_count=len(placements),
    )
    return Recorded(
        event=event, duplicate=duplicate, placements=tuple(placements)
    )


def test_a_batch_round_trips_with_each_body_sent_once() -> None:
    batch = [
        recorded("e1", ("chan_a", 7), ("chan_b", 1)),
        recorded("e0", duplicate=True),  # placed before: nothing to announce
        recorded("e2", ("chan_a", 8)),
    ]
    payload = relay.encode("node_x", batch)
    assert payload is not None
    assert len(json.loads(payload)["events"]) == 2

    decoded = relay.decode(payload)
    assert decoded.node == "node_x" and decoded.closed == {}
    assert decoded.events == [event_body(batch[0].event), event_body(batch[2].event)]
    assert decoded.channels == {"chan_a": [(7, 0), (8, 1)], "chan_b": [(1, 0)]}


def test_nothing_placed_means_nothing_to_send() -> None:
    assert relay.encode("node_x", [recorded("e0", duplicate=True)]) is None


def test_a_closed_channel_round_trips() -> None:
    closed_at = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)
    decoded = relay.decode(relay.encode_closed("node_x", "chan_a", closed_at))
    assert decoded.closed == {"chan_a": closed_at} and decoded.channels == {}


def test_a_connect_failure_round_trips() -> None:
    decoded = relay.decode(relay.encode_connect_failure("node_x", "203.0.113.7"))
    assert decoded.node == "node_x"
    assert decoded.connect_failures == ["203.0.113.7"]
    assert decoded.channels == {} and decoded.closed == {} and decoded.events == []
    # Batches carry none.
    assert (
        relay.decode(relay.encode_closed("node_x", "chan_a", datetime.now(UTC))).connect_failures
        == []
    )
