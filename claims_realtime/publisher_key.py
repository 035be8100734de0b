"""The ingestion API's shared secret: PUBLISHER_KEY, or one generated once under DATA_DIR;
and the counter of wrong keys per client address. A presented key is checked per request by
claims_realtime.handlers.claim_events."""

from __future__ import annotations

from pathlib import Path

from claims_realtime.key_files import read_or_create
from claims_realtime.models.credentials import new_token
from claims_realtime.realtime.limits import FailureLimiter
from claims_realtime.settings import Settings

KEY_FILE = "publisher.key"


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def resolve_publisher_key(settings: Settings) -> str:
    """The configured key, else the stored one, else a new one stored owner-only (0600)."""
    if settings.publisher_key:
        return settings.publisher_key
    return read_or_create(key_path(settings), new_token, "PUBLISHER_KEY")


def publisher_key_failures(settings: Settings) -> FailureLimiter:
    """Wrong publisher keys per client address (PUBLISHER_KEY_FAILURE_LIMIT within
    PUBLISHER_KEY_FAILURE_WINDOW; a limit of 0 counts nothing)."""
    return FailureLimiter(
        settings.publisher_key_failure_limit, settings.publisher_key_failure_window_seconds
    )
