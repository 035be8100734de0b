"""Our event packets are exactly python-socketio's encoding of the same envelope."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from socketio import packet

from claims_realtime.models.event import NewEvent
from claims_realtime.realtime.protocol import (
    envelope_json,
    event_packet,
    namespace_of,
    prepare,
    prepare_fields,
)
from tests.asyncapi import envelope

BODIES: list[dict[str, Any]] = [
    {
        "event_id": "evt_1",
        "event_type": "status_changed",
        "claim_id": "clm_1",
        "organisation_id": "org_1",
        "user_id": "usr_1",
        "actor_id": None,
        "occurred_at": "2026-03-26T08:00:00.000Z",
        "data": {},
    },
    {
        "event_id": "e:2",
        "event_type": "comment_added",
        "claim_id": "c.2",
        "organisation_id": "o-2",
        "user_id": "u_2",
        "actor_id": "usr_coord99",
        "occurred_at": "2026-03-26T08:00:00.123Z",
        "data": {
            "text": 'quotes " and \\\\ backslashes, é, 😀, NUL \\x00, lone \\udb65',
            "n": [1, 2.5, -3e-7, None, True],
            "nested": {"": {"a": []}},
        },
    },
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("sequence", [1, 42, 9_007_199_254_740_991])
def test_event_packet_is_byte_for_byte_python_socketios_encoding(
    body: dict[str, Any], sequence: int
) -> None:
    channel_id = "chan_b5c6d7e8"
    expected = packet.Packet(
        packet.EVENT,
        data=[body["event_type"], envelope(channel_id, sequence, body)],
        namespace=namespace_of(channel_id),
        id=sequence,
    ).encode()
    assert event_packet(channel_id, sequence, prepare(body)) == expected


@pytest.mark.parametrize("body", BODIES)
def test_an_event_just_recorded_is_prepared_as_its_body_would_be(body: dict[str, Any]) -> None:
    """prepare_fields concatenates what ingestion serialised already; the result must be what
    serialising the whole body gives, escapes and all."""
    occurred = datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00"))
    event = NewEvent(
        event_id=body["event_id"],
        event_type=body["event_type"],
        claim_id=body["claim_id"],
        organisation_id=body["organisation_id"],
        user_id=body["user_id"],
        actor_id=body["actor_id"],
        occurred_at=occurred,
        recorded_at=occurred,
        data=body["data"],
        data_json=json.dumps(body["data"], separators=(",", ":")),
        fingerprint="",
    )
    assert prepare_fields(event) == prepare(body)


@pytest.mark.parametrize("body", BODIES)
def test_the_envelope_rest_answers_is_the_one_the_packet_carries(body: dict[str, Any]) -> None:
    """listChannelEvents answers `protocol.envelope_json`; a socket gets `event_packet`'s JSON:
    the same text, key for key, and the envelope the AsyncAPI document describes."""
    channel_id = "chan_b5c6d7e8"
    encoded = event_packet(channel_id, 7, prepare(body))
    _, carried = json.loads(encoded[encoded.index("[") :])
    answered_text = envelope_json(channel_id, 7, prepare(body))
    assert answered_text in encoded
    answered = json.loads(answered_text)
    assert list(answered.items()) == list(carried.items())
    assert answered == envelope(channel_id, 7, body)
