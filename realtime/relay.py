"""The message one process publishes after recording a batch, for the others' sockets.

Each event's body travels once; per channel, only (sequence, index of the event) pairs.

    {"node": "<sender>", "events": [body, ...], "channels": {"chan_x": [[7, 0], [8, 1]], ...}}

and when a channel is closed, so that its sockets elsewhere are told and dropped:

    {"node": "<sender>", "closed": {"chan_x": "2026-03-26T10:00:00.000Z"}}

and when a client address presented bad credentials, so that every process counts it
against that address (see realtime.limits.FailureLimiter):

    {"node": "<sender>", "connect_failures": ["203.0.113.7"]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from claims_realtime.models.ingest import Recorded
from claims_realtime.realtime.protocol import event_body


@dataclass(frozen=True)
class Relayed:
    """A decoded batch: the event bodies, and per channel its new (sequence, index of the
    body) pairs in order."""

    node: str
    events: list[dict[str, Any]]
    channels: dict[str, list[tuple[int, int]]]
    closed: dict[str, datetime]
    connect_failures: list[str]


def encode(node: str, recorded: Sequence[Recorded]) -> bytes | None:
    """The batch as bytes, or None when it placed nothing (duplicates only, no channels)."""
    events: list[dict[str, Any]] = []
    channels: dict[str, list[tuple[int, int]]] = {}
    for outcome in recorded:
        if not outcome.placements:
            continue
        index = len(events)
        events.append(event_body(outcome.event))
        for channel_id, sequence in outcome.placements:
            channels.setdefault(channel_id, []).append((sequence, index))
    if not events:
        return None
    message = {"node": node, "events": events, "channels": channels}
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def encode_closed(node: str, channel_id: str, closed_at: datetime) -> bytes:
    return json.dumps({"node": node, "closed": {channel_id: closed_at.isoformat()}}).encode()


def encode_connect_failure(node: str, address: str) -> bytes:
    return json.dumps({"node": node, "connect_failures": [address]}).encode()


def decode(payload: bytes) -> Relayed:
    message = json.loads(payload)
    return Relayed(
        node=message["node"],
        events=message.get("events", []),
        channels={
            channel_id: [(int(sequence), int(index)) for sequence, index in pairs]
            for channel_id, pairs in message.get("channels", {}).items()
        },
        closed={
            channel_id: datetime.fromisoformat(closed_at)
            for channel_id, closed_at in message.get("closed", {}).items()
        },
        connect_failures=[str(address) for address in message.get("connect_failures", [])],
    )
