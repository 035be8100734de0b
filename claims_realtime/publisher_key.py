"""The ingestion API's shared secret: PUBLISHER_KEY, or one generated once under DATA_DIR;
and the counter of wrong keys per client address. A presented key is checked per request by
claims_realtime.handlers.claim_events."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from claims_realtime.models.credentials import new_token
from claims_realtime.realtime.limits import FailureLimiter
from claims_realtime.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "publisher.key"


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def resolve_publisher_key(settings: Settings) -> str:
    """The configured key, else the stored one, else a new one stored owner-only (0600)."""
    if settings.publisher_key:
        return settings.publisher_key
    path = key_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as file:
                file.write(new_token() + "\n")
            # The key itself is never logged: only where to find it.
            log.warning(
                "generated a publisher key in %s (set PUBLISHER_KEY to choose one)", path.resolve()
            )
    return path.read_text().strip()


def publisher_key_failures(settings: Settings) -> FailureLimiter:
    """Wrong publisher keys per client address (PUBLISHER_KEY_FAILURE_LIMIT within
    PUBLISHER_KEY_FAILURE_WINDOW; a limit of 0 counts nothing)."""
    return FailureLimiter(
        settings.publisher_key_failure_limit, settings.publisher_key_failure_window_seconds
    )
