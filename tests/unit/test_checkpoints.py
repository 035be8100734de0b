"""WAL checkpoints off the writer's commit path (models.backends.checkpoints): the thread
copies the WAL into the database file, and the writer lets the WAL start again once the
thread has fallen behind its commits."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from claims_realtime.models.backends.checkpoints import Checkpointer


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # as the writer process sets it
    return db


def write(db: sqlite3.Connection, rows: int) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO item (body) VALUES (?)", [("x" * 1000,)] * rows)
    db.execute("COMMIT")


def wal_frames(path: Path) -> int:
    """The WAL's length in frames, read off its file: a restarted WAL is written again from
    its start, so the file stops growing."""
    return (os.path.getsize(f"{path}-wal") - 32) // (4096 + 24)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    path = tmp_path / "claims.sqlite3"
    db = connect(path)
    db.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, body TEXT)")
    yield path, db
    db.close()


def test_the_thread_copies_the_wal_into_the_database_file(
    database: tuple[Path, sqlite3.Connection],
) -> None:
    path, db = database
    write(db, 1000)  # about a megabyte, all of it in the WAL
    assert os.path.getsize(path) < 100_000
    checkpointer = Checkpointer(str(path), {}, interval=0.01)
    try:
        deadline = time.monotonic() + 10
        while os.path.getsize(path) < 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.01)  # the thread's next checkpoint
        assert os.path.getsize(path) > 1_000_000
        assert checkpointer.frames > 250
    finally:
        checkpointer.close()


def fall_behind(path: Path, db: sqlite3.Connection, checkpointer: Checkpointer) -> int:
    """Commit while a reader's snapshot holds the thread's checkpoint back, as steady load
    does: the checkpoint copies only what came before it. Answers the WAL's length."""
    write(db, 400)
    reader = connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM item").fetchone()
    write(db, 400)
    checkpointer.checkpoint_now()
    reader.execute("COMMIT")
    reader.close()
    return wal_frames(path)


def test_the_writer_lets_a_long_wal_start_again(
    database: tuple[Path, sqlite3.Connection],
) -> None:
    path, db = database
    checkpointer = Checkpointer(str(path), {}, interval=3600, restart_frames=100)
    try:
        length = fall_behind(path, db, checkpointer)
        assert checkpointer.frames == length > 100
        checkpointer.after_answering(db)
        write(db, 10)
        assert wal_frames(path) == length  # written from its start again, not appended
    finally:
        checkpointer.close()


def test_a_short_wal_is_left_to_the_thread(database: tuple[Path, sqlite3.Connection]) -> None:
    path, db = database
    checkpointer = Checkpointer(str(path), {}, interval=3600, restart_frames=10_000)
    try:
        length = fall_behind(path, db, checkpointer)
        checkpointer.after_answering(db)  # under its restart_frames: nothing to do
        write(db, 10)
        assert wal_frames(path) > length  # the checkpoint was behind: appended
    finally:
        checkpointer.close()
