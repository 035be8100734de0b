"""Secrets the server generates for itself when none is configured: created once under
DATA_DIR, owner-only (0600), and shared by every process that uses the same directory."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: How long to wait for another process that created the file first to finish writing it.
WRITER_GRACE_SECONDS = 2.0


def read_or_create(path: Path, make: Callable[[], str], setting: str) -> str:
    """The secret stored in `path`, created from `make()` if there is none yet. The secret
    itself is never logged: only where to find it and the `setting` that overrides it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as file:
                file.write(make() + "\n")
            log.warning("generated %s (set %s to choose one)", path.resolve(), setting)
    deadline = time.monotonic() + WRITER_GRACE_SECONDS
    while not (secret := path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.01)  # created by another process that has not written it yet
    if not secret:
        raise RuntimeError(f"{path} is empty: delete it, or set {setting}")
    return secret
