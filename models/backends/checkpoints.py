"""WAL checkpoints off the writer process's commit path (SQLite database files).

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past
`wal_autocheckpoint` pages: that commit, and every call queued behind it, waits while the WAL
is copied into the database file (30-60 ms at user 10,000 deliveries/s, the top percent of
the latency; docs/performance-log.md). The writer process turns it off on its connection and
uses a `Checkpointer` instead:

- a thread, on a connection of its own, runs a PASSIVE checkpoint every `INTERVAL` seconds:
  it never waits for the writer nor makes it wait, and sqlite3 lets the GIL go while it runs;
- once that thread has seen the WAL at `RESTART_FRAMES` frames or more, the writer, after
  answering a group, checkpoints what came since (little), so that its next transaction
  starts the WAL again from its beginning. A checkpoint only reaches the last commit before it
  began, and the WAL starts again only when it is wholly copied: left to the thread under
  steady writes, it never was, and the WAL grew without bound.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping

#: Seconds between the thread's checkpoints.
INTERVAL = 0.1
#: WAL frames (pages) past which the writer lets the WAL start again.
RESTART_FRAMES = 4000


class Checkpointer:
    """Checkpoints of the database file at `path` by a thread of this process."""

    def __init__(
        self,
        path: str,
        pragmas: Mapping[str, str],
        *,
        interval: float = INTERVAL,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for name, value in pragmas.items():
            self._db.execute(f"PRAGMA {name}={value}")
        self._interval = interval
        self._restart_frames = restart_frames
        #: The WAL's length in frames, as the last checkpoint found it.
        self.frames = 0
        #: Held by whichever connection checkpoints: one at a time.
        self._checkpointing = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.checkpoint_now()

    def checkpoint_now(self) -> None:
        """One of the thread's checkpoints (the thread runs them; tests call it too)."""
        with self._checkpointing:
            self.frames = _checkpoint(self._db)

    def after_answering(self, db: sqlite3.Connection) -> None:
        """The writer's turn, between groups, on its connection `db`: if the WAL is long,
        copy what the thread has not, so that the next transaction starts it again. Never
        waits for the thread's checkpoint: if one is running, the next group's turn comes."""
        if self.frames < self._restart_frames or not self._checkpointing.acquire(blocking=False):
            return
        try:
            _checkpoint(db)
            self.frames = 0
        finally:
            self._checkpointing.release()

    def close(self) -> None:
        """Stop the thread, once its checkpoint in progress (if any) is done."""
        self._stop.set()
        self._thread.join()
        self._db.close()


def _checkpoint(db: sqlite3.Connection) -> int:
    """A PASSIVE checkpoint on `db`; the WAL's length in frames, 0 if it failed (a disk
    error fails the writer's next commit too; the next checkpoint tries again)."""
    try:
        row = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        return 0
    return max(0, int(row[1]))
