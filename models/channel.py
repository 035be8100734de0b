"""The channel table: one row per subscription."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from tortoise import fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

from claims_realtime.models.event import Feed


class SubscriptionType(StrEnum):
    ORGANISATION_CLAIMS = "organisation_claims"
    USER_CLAIMS = "user_claims"


class ChannelStatus(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


class EventType(StrEnum):
    STATUS_CHANGED = "status_changed"
    CLAIM_SUBMITTED = "claim_submitted"
    CLAIM_APPROVED = "claim_approved"
    CLAIM_REJECTED = "claim_rejected"
    COMMENT_ADDED = "comment_added"


ALL_EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)


class Channel(Model):
    """A subscription channel and its delivery positions.

    Sequences are per channel: the n-th event recorded on a channel has sequence n, so
    `head_sequence` is also the channel's event count. The events are its feed's after
    `feed_offset` (and, once closed, up to `closed_position`): reading the head or the
    newest event's time needs the feed loaded (models.subscriptions loads it).
    """

    #: `chan_` + random lowercase alphanumerics from a CSPRNG.
    id = fields.CharField(max_length=72, primary_key=True)
    subscription_type = fields.CharEnumField(SubscriptionType, max_length=32)
    #: Set on organisation channels only.
    organisation_id = fields.CharField(max_length=64, null=True, db_index=True)
    #: The coordinator (organisation channels) or claimant (user channels).
    user_id = fields.CharField(max_length=64, db_index=True)
    #: Event types delivered on this channel, in canonical order.
    event_types: list[str] = fields.JSONField()
    status = fields.CharEnumField(ChannelStatus, max_length=16, default=ChannelStatus.CONNECTED)
    #: SHA-256 of the channel token (the token itself is shown once, at creation).
    token_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(db_index=True)
    closed_at = fields.DatetimeField(null=True)
    reconnected_at = fields.DatetimeField(null=True)
    #: The feed carrying the channel's events (NULL only while migration 0005 runs).
    feed: fields.ForeignKeyNullableRelation[Feed] = fields.ForeignKeyField(
        "models.Feed", related_name="channels", on_delete=fields.RESTRICT, null=True, db_index=True
    )
    feed_id: int | None
    #: The feed's head when the channel was created: later positions are the channel's.
    feed_offset = fields.BigIntField(default=0)
    #: The feed's head when the channel was closed: later positions are not the channel's.
    closed_position = fields.BigIntField(null=True)
    #: The newest event's time as of closing (an open channel's is its feed's).
    closed_event_at = fields.DatetimeField(null=True)
    #: Highest sequence the client confirmed (ack), if it ever did.
    confirmed_sequence = fields.BigIntField(null=True)
    #: Highest sequence the server wrote to one of the channel's sockets.
    delivered_sequence = fields.BigIntField(null=True)

    class Meta:
        table = "channel"

    async def refresh_from_db(
        self, fields: Iterable[str] | None = None, using_db: BaseDBAsyncClient | None = None
    ) -> None:
        """The fields asked for, and the feed, which the head is read from."""
        await super().refresh_from_db(fields, using_db)
        if self.feed_id is not None:
            self.feed = await Feed.filter(id=self.feed_id).using_db(using_db).get()

    @property
    def head_sequence(self) -> int:
        """Sequence of the newest event recorded on the channel (0 before the first)."""
        if self.closed_position is not None:
            return int(self.closed_position) - int(self.feed_offset)
        return int(self._loaded_feed.head) - int(self.feed_offset)

    @property
    def last_event_at(self) -> datetime | None:
        if self.closed_position is not None:
            return self.closed_event_at
        feed = self._loaded_feed
        return feed.last_event_at if feed.head > self.feed_offset else None

    @property
    def _loaded_feed(self) -> Feed:
        feed = self.feed
        if not isinstance(feed, Feed):
            raise RuntimeError(f"channel {self.id} was loaded without its feed")
        return feed

    @property
    def event_count(self) -> int:
        return self.head_sequence

    @property
    def resume_sequence(self) -> int:
        """Server-side resume point: confirmed, else delivered, else nothing (0)."""
        if self.confirmed_sequence is not None:
            return int(self.confirmed_sequence)
        if self.delivered_sequence is not None:
            return int(self.delivered_sequence)
        return 0
