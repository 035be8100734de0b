"""The ingestion API's shared secret: PUBLISHER_KEY, or one generated once under DATA_DIR;
and the check of a presented key, with wrong keys counted per client address.

Wrong keys are counted by each process on its own (unlike socket connect failures, which
the processes relay to each other): behind N processes an address may try up to N times
the limit per window, still a bound.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from claims_realtime.models.credentials import new_token, secret_matches
from claims_realtime.models.errors import TooManyAttempts
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


def admit_publisher_key(
    api_key: str, key_hash: str, failures: FailureLimiter, address: str
) -> bool:
    """True if `api_key` is the publisher key (`key_hash` is its hash).

    An address with too many recent wrong keys gets TooManyAttempts (429, Retry-After)
    before its key is even compared, right or wrong, until those failures age out. A wrong
    key counts against the address; a right one forgives nothing.
    """
    if failures.blocked(address):
        raise TooManyAttempts(
            "Too many requests with a wrong X-Publisher-Key from this address; "
            "retry after the time in Retry-After.",
            failures.retry_after(address),
        )
    if secret_matches(api_key, key_hash):
        return True
    failures.failed(address)
    return False
