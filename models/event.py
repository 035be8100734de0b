"""The durable history: each claim event stored once, and its place in each channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise import fields
from tortoise.models import Model

from claims_realtime.models.fields import JSONTextField


class ClaimEvent(Model):
    """One accepted claim event, stored once however many channels it reached."""

    #: The publisher's idempotency key (or a server-assigned `evt_...`).
    event_id = fields.CharField(max_length=128, primary_key=True)
    event_type = fields.CharField(max_length=32)
    claim_id = fields.CharField(max_length=64)
    organisation_id = fields.CharField(max_length=64)
    #: The claim's owner.
    user_id = fields.CharField(max_length=64)
    actor_id = fields.CharField(max_length=64, null=True)
    occurred_at = fields.DatetimeField()
    recorded_at = fields.DatetimeField(db_index=True)
    data: dict[str, Any] = JSONTextField(default=dict)
    #: SHA-256 of the event as submitted: a retry must match it to count as a duplicate.
    #: Empty when the server assigned the id (models.submission.NO_FINGERPRINT).
    fingerprint = fields.CharField(max_length=64)
    #: How many channels recorded it (answered again to a duplicate submission).
    channel_count = fields.IntField(default=0)

    class Meta:
        table = "claim_event"


class ChannelEvent(Model):
    """Event `event` is number `sequence` on channel `channel`."""

    id = fields.BigIntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Any] = fields.ForeignKeyField(
        "models.Channel", related_name="history", on_delete=fields.CASCADE
    )
    sequence = fields.BigIntField()
    # Not a database constraint: with one, deleting a claim event (history.prune) made the
    # database look for its placements by event_id, which no index serves: a scan of the
    # whole history per expired event (2,000 expired events among 200,000 placements took
    # 106 s on SQLite, writers locked out). Ingestion writes an event and its placements in
    # one transaction, and prune deletes the placements first, so nothing relies on it.
    event: fields.ForeignKeyRelation[ClaimEvent] = fields.ForeignKeyField(
        "models.ClaimEvent",
        related_name="placements",
        on_delete=fields.CASCADE,
        db_constraint=False,
    )
    recorded_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "channel_event"
        unique_together = (("channel", "sequence"),)


@dataclass(slots=True)
class NewEvent:
    """An event being recorded: ClaimEvent's fields, without a Tortoise model object
    (ingestion builds one per event of every batch, and a model instance cost ~20 us),
    plus `data` serialised once, as stored and as it goes into the envelope."""

    event_id: str
    event_type: str
    claim_id: str
    organisation_id: str
    user_id: str
    actor_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    #: `data` as compact ASCII JSON: the stored text (JSONTextField's encoding).
    data_json: str
    fingerprint: str
    channel_count: int = 0


@dataclass(slots=True)
class StoredEvent:
    """A kept event as its channel numbers it, read for a socket's replay or a page of
    history: plain values, `data` as the stored JSON text, no model objects (building them
    and parsing their times was most of a page's cost, docs/performance-log.md)."""

    sequence: int
    event_id: str
    event_type: str
    claim_id: str
    organisation_id: str
    user_id: str
    actor_id: str | None
    occurred_at: datetime
    #: `data` as compact ASCII JSON, as stored (JSONTextField's encoding).
    data_json: str
    #: When the channel recorded it (fallback webhooks fall due from it).
    recorded_at: datetime
