"""How a channel's fallback webhook looks on the wire (the OpenAPI schemas FallbackState and
FallbackSet)."""

from __future__ import annotations

from typing import Any

from claims_realtime.models.clock import rfc3339, rfc3339_or_none
from claims_realtime.models.fallback import WebhookFailure
from claims_realtime.models.fallbacks import FallbackSet, FallbackState


def _failure(failure: WebhookFailure) -> dict[str, Any]:
    return {
        "sequence": int(failure.sequence),
        "event_id": failure.event_id,
        "attempts": int(failure.attempts),
        "last_status": failure.last_status,
        "last_error": failure.last_error,
        "failed_at": rfc3339(failure.failed_at),
    }


def fallback_state(state: FallbackState) -> dict[str, Any]:
    """The fallback's settings and delivery state: never its secret."""
    fallback = state.fallback
    return {
        "channel_id": fallback.channel_id,  # type: ignore[attr-defined]
        "url": fallback.url,
        "after_seconds": int(fallback.after_seconds),
        "event_types": list(fallback.event_types),
        "status": "disabled" if fallback.disabled_at is not None else "active",
        "disabled_at": rfc3339_or_none(fallback.disabled_at),
        "pending": state.pending,
        "sent": int(fallback.sent),
        "failed": int(fallback.failed),
        "last_status": fallback.last_status,
        "last_error": fallback.last_error,
        "last_attempt_at": rfc3339_or_none(fallback.last_attempt_at),
        "next_attempt_at": rfc3339_or_none(fallback.next_attempt_at),
        "recent_failures": [_failure(failure) for failure in state.recent_failures],
        "created_at": rfc3339(fallback.created_at),
        "updated_at": rfc3339(fallback.updated_at),
    }


def fallback_set(made: FallbackSet) -> dict[str, Any]:
    """A fallback just set: its state, with the secret shown this once."""
    state = FallbackState(made.fallback, made.pending, list(made.recent_failures))
    return {**fallback_state(state), "secret": made.secret}
