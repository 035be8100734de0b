"""The durable history: each claim event stored once, and its place in each feed."""

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


class Feed(Model):
    """Events of one routing, numbered once: 1, 2, 3 ... (`position`). Channels that route
    alike (same subscription type, organisation or user, event types) share a feed, and a
    channel's sequence of a feed event is `position - channel.feed_offset`, so an
    organisation event is stored once however many of its coordinators subscribe
    (docs/architecture.md, "Feeds")."""

    id = fields.BigIntField(primary_key=True)
    #: `<subscription type>:<organisation or user id>:<event types, comma-separated>` for a
    #: shared feed; `channel:<channel id>` for a channel's own (migration 0005 gave every
    #: channel of an earlier version one, so that its history stayed exactly as it was).
    name = fields.CharField(max_length=512, unique=True)
    #: Position of the newest event (0 before the first).
    head = fields.BigIntField(default=0)
    last_event_at = fields.DatetimeField(null=True)

    class Meta:
        table = "feed"


class FeedEvent(Model):
    """Event `event` is number `position` on feed `feed`."""

    id = fields.BigIntField(primary_key=True)
    feed: fields.ForeignKeyRelation[Feed] = fields.ForeignKeyField(
        "models.Feed", related_name="events", on_delete=fields.CASCADE
    )
    position = fields.BigIntField()
    # Not a database constraint (see migration 0002: deleting a claim event would look for
    # its rows without an index); indexed for receipts, which find an event's positions.
    event: fields.ForeignKeyRelation[ClaimEvent] = fields.ForeignKeyField(
        "models.ClaimEvent",
        related_name="positions",
        on_delete=fields.CASCADE,
        db_constraint=False,
        db_index=True,
    )
    recorded_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "feed_event"
        unique_together = (("feed", "position"),)


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

    def __reduce__(self) -> tuple[type[NewEvent], tuple[Any, ...]]:
        # Pickled to SQLite's writer process with every ingestion: as its fields, in order,
        # at under half the cost of a slots dataclass's own state methods (both ways).
        return NewEvent, (
            self.event_id,
            self.event_type,
            self.claim_id,
            self.organisation_id,
            self.user_id,
            self.actor_id,
            self.occurred_at,
            self.recorded_at,
            self.data,
            self.data_json,
            self.fingerprint,
            self.channel_count,
        )


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
