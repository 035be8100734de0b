"""Domain errors. Each maps to one problem+json response, in one place (the app factory).

DomainError
├── InvalidInput        400  a field is wrong in a way the schema cannot say
├── Unauthorized        401  missing or wrong publisher key
├── Forbidden           403  the caller may not do this (AUTH_MODE=jwt; may name a field)
├── ChannelNotFound     404  no channel has this id
├── EventNotFound       404  no kept claim event has this id (never recorded, or expired)
├── FallbackNotFound    404  the channel has no fallback webhook
├── EventIdConflict     409  an event_id was reused for a different event
├── TooManyChannels     409  the user_id has MAX_CHANNELS_PER_USER active channels already
├── ChannelClosed       410  the channel was closed (carries closed_at)
├── TooManyAttempts     429  too many wrong publisher keys from this address (Retry-After)
└── Unavailable         503  a dependency (database, Redis) cannot be reached
"""

from __future__ import annotations

import math
from datetime import datetime

from claims_realtime.models.clock import rfc3339


class DomainError(Exception):
    """Base of every error the domain reports to a caller."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def extensions(self) -> dict[str, object]:
        """Extra problem members (RFC 9457 extension members)."""
        return {}

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}


class InvalidInput(DomainError):
    status = 400
    title = "Bad Request"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field

    def extensions(self) -> dict[str, object]:
        return {"field": self.field}


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field

    def extensions(self) -> dict[str, object]:
        return {"field": self.field} if self.field else {}


class ChannelNotFound(DomainError):
    status = 404
    title = "Not Found"

    def __init__(self, channel_id: str) -> None:
        super().__init__(f"No channel {channel_id}.")
        self.channel_id = channel_id


class EventNotFound(DomainError):
    status = 404
    title = "Not Found"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"No claim event {event_id} (never recorded, or expired by retention).")
        self.event_id = event_id

    def extensions(self) -> dict[str, object]:
        return {"field": "event_id"}


class FallbackNotFound(DomainError):
    status = 404
    title = "Not Found"

    def __init__(self, channel_id: str) -> None:
        super().__init__(
            f"Channel {channel_id} has no fallback webhook "
            "(PUT /realtime-subscriptions/{channel_id}/fallback sets one)."
        )

    def extensions(self) -> dict[str, object]:
        return {"field": "fallback"}


class EventIdConflict(DomainError):
    status = 409
    title = "Conflict"

    def __init__(self, event_id: str, field: str = "event_id") -> None:
        super().__init__(
            f"event_id {event_id} was already recorded with different content; "
            "an event_id identifies one event and may only be retried unchanged."
        )
        self.field = field

    def extensions(self) -> dict[str, object]:
        return {"field": self.field}


class TooManyChannels(DomainError):
    status = 409
    title = "Conflict"

    def __init__(self, user_id: str, limit: int) -> None:
        super().__init__(
            f"user_id {user_id} already has {limit} active channels, the most allowed; "
            "close one (DELETE /realtime-subscriptions/{channel_id}) before creating another."
        )
        self.limit = limit

    def extensions(self) -> dict[str, object]:
        return {"field": "user_id", "limit": self.limit}


class ChannelClosed(DomainError):
    status = 410
    title = "Gone"

    def __init__(self, channel_id: str, closed_at: datetime) -> None:
        super().__init__(f"Channel {channel_id} was closed at {rfc3339(closed_at)}.")
        self.closed_at = closed_at

    def extensions(self) -> dict[str, object]:
        return {"closed_at": rfc3339(self.closed_at)}


class TooManyAttempts(DomainError):
    status = 429
    title = "Too Many Requests"

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        #: Whole seconds, rounded up (at least 1): Retry-After takes no fractions.
        self.retry_after = max(1, math.ceil(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(DomainError):
    status = 503
    title = "Service Unavailable"

    def __init__(self, detail: str, checks: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.checks = checks or {}

    def extensions(self) -> dict[str, object]:
        return {"checks": self.checks} if self.checks else {}
