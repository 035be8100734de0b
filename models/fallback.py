"""The fallback webhook tables: a channel's webhook settings and delivery cursor, and the
webhooks that failed for good.

A fallback never adds a row per event: like a subscriber's confirmations, what has been
dealt with is one cursor per channel. The events it still owes are the channel's placements
after max(`cursor`, the channel's confirmed sequence), of the fallback's event types, that
were recorded more than `after_seconds` ago. One channel's webhooks go out one at a time,
in sequence order, by whichever process holds the row's lease.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class WebhookFallback(Model):
    """One channel's fallback webhook and where its delivery stands."""

    channel: fields.OneToOneRelation[Any] = fields.OneToOneField(
        "models.Channel", related_name="fallback", on_delete=fields.CASCADE, primary_key=True
    )
    url = fields.CharField(max_length=2048)
    after_seconds = fields.IntField()
    #: Event types that fire, in canonical order (a subset of the channel's).
    event_types: list[str] = fields.JSONField()
    #: The signing secret, encrypted (models.webhook_secrets.SecretBox): shown once, in clear.
    secret = fields.TextField()
    #: Every sequence up to this one is dealt with: sent, failed for good, or recorded
    #: before the fallback was set.
    cursor = fields.BigIntField(default=0)
    #: Attempts at the webhook after `cursor` so far, and when the first was made.
    attempts = fields.IntField(default=0)
    first_attempt_at = fields.DatetimeField(null=True)
    #: Not before: the next retry, or when the next owed event falls due.
    next_attempt_at = fields.DatetimeField(null=True)
    last_attempt_at = fields.DatetimeField(null=True)
    #: The receiver's last HTTP status (None: no answer, see last_error).
    last_status = fields.IntField(null=True)
    last_error = fields.CharField(max_length=200, null=True)
    #: The process sending this channel's webhooks, until when (a lease, renewed as it goes).
    lease_owner = fields.CharField(max_length=64, null=True)
    lease_until = fields.DatetimeField(null=True, db_index=True)
    #: Set when the receiver answered 410 Gone: nothing more is sent until the next PUT.
    disabled_at = fields.DatetimeField(null=True)
    sent = fields.BigIntField(default=0)
    failed = fields.BigIntField(default=0)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "webhook_fallback"


class WebhookFailure(Model):
    """A webhook that failed for good (a 4xx other than 408/410/429, or retries exhausted)."""

    id = fields.BigIntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Any] = fields.ForeignKeyField(
        "models.Channel", related_name="webhook_failures", on_delete=fields.CASCADE
    )
    sequence = fields.BigIntField()
    event_id = fields.CharField(max_length=128)
    attempts = fields.IntField()
    last_status = fields.IntField(null=True)
    last_error = fields.CharField(max_length=200, null=True)
    failed_at = fields.DatetimeField()

    class Meta:
        table = "webhook_failure"
        unique_together = (("channel", "sequence"),)


class WebhookKeyCheck(Model):
    """One row: a known text, sealed with the first process's WEBHOOK_SECRET_KEY.

    A process whose keys cannot open it would seal secrets the others cannot read, and could
    not read theirs (models.fallbacks.keys_agree)."""

    id = fields.IntField(primary_key=True)
    sealed = fields.TextField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "webhook_key_check"
