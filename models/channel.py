"""The channel table: one row per subscription."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


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
    `head_sequence` is also the channel's event count.
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
    last_event_at = fields.DatetimeField(null=True)
    #: Sequence of the newest event recorded on the channel (0 before the first).
    head_sequence = fields.BigIntField(default=0)
    #: Highest sequence the client confirmed (ack), if it ever did.
    confirmed_sequence = fields.BigIntField(null=True)
    #: Highest sequence the server wrote to one of the channel's sockets.
    delivered_sequence = fields.BigIntField(null=True)

    class Meta:
        table = "channel"

    @property
    def event_count(self) -> int:
        return int(self.head_sequence)

    @property
    def resume_sequence(self) -> int:
        """Server-side resume point: confirmed, else delivered, else nothing (0)."""
        if self.confirmed_sequence is not None:
            return int(self.confirmed_sequence)
        if self.delivered_sequence is not None:
            return int(self.delivered_sequence)
        return 0
