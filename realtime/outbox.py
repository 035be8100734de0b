"""The transactional outbox consumer: events the claims service wrote into its own database,
in the transactions that changed its claims, recorded and delivered as if POSTed to us.

One dedicated asyncpg connection to OUTBOX_URL per process. The process holding the
session advisory lock (models.outbox.lock_key) consumes; the others try again at every poll,
so when the consumer dies its session ends, the lock frees and another takes over within a
poll interval or two. A run is woken by the trigger's NOTIFY (LISTEN) or by the poll timer,
so a lost notification only adds latency.

Each run reads the first OUTBOX_BATCH_SIZE rows in id order; checks each event with the
validation of `POST /claim-events` (the composition passes it in: `check`); records the
valid ones with one `Hub.publish(..., batch=True)` (the domain's own checks happen there, and
a row they refuse is taken out and the rest tried again); and only after our commit deletes
the consumed rows and moves the rejected ones to `<table>_rejected`, in one outbox
transaction. A crash in between leaves rows that are recorded again as duplicates: an event
without `event_id` gets one derived from its row (models.outbox.event_id_for).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from claims_realtime.models import outbox
from claims_realtime.models.db import database_unavailable
from claims_realtime.models.errors import EventIdConflict, InvalidInput
from claims_realtime.models.outbox import OutboxRow
from claims_realtime.realtime import metrics, stopping
from claims_realtime.realtime.hub import Hub

log = logging.getLogger(__name__)

#: The oldest waiting row's age, in seconds, past which readiness says `lagging`.
LAG_THRESHOLD_SECONDS = 30.0
#: The longest wait between attempts to reach an unreachable outbox database.
MAX_RECONNECT_SECONDS = 30.0
#: How long connecting (and each statement) may take before the outbox counts as unreachable.
OUTBOX_TIMEOUT_SECONDS = 10.0
#: Runs a row may fail to record, neither refused nor for an outage (a bug, say), before it
#: is rejected: the rows behind it wait that many poll intervals at most, not forever.
MAX_RECORD_ATTEMPTS = 3
#: A domain error about one event of a batch names it: `events.<i>.<field>`.
_BATCH_FIELD = re.compile(r"events\.(\d+)\.")

#: The check of one event as `POST /claim-events` checks its body: None if valid, else the
#: detail a 400 would carry.
EventCheck = Callable[[Any], str | None]


class RecordingFailed(RuntimeError):
    """Recording failed here, neither refused by the domain nor for want of our database:
    counted per row, and the row rejected after MAX_RECORD_ATTEMPTS (see _record)."""


@dataclass(frozen=True)
class Recording:
    """The rows one run recorded, in id order; not `complete` if some must wait."""

    rows: list[OutboxRow]
    complete: bool


class OutboxConsumer:
    """Consumes the outbox table `table` in the database at `url` (see the module docstring)."""

    def __init__(
        self,
        hub: Hub,
        url: str,
        table: str,
        *,
        check: EventCheck,
        poll_interval: float,
        batch_size: int,
        lag_threshold: float = LAG_THRESHOLD_SECONDS,
    ) -> None:
        self.hub = hub
        self.url = url
        self.table = table
        self.check = check
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.lag_threshold = lag_threshold
        self._connection: asyncpg.Connection | None = None
        #: current_database() of the outbox: part of the derived event ids.
        self._database = ""
        self.leading = False
        self._oldest = 0.0
        self._outbox_down = False
        self._ours_down = False
        #: Failed attempts per row id, of rows that failed to record alone (see _give_up).
        self._attempts: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming in the background; an unreachable outbox is retried, not fatal."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop between runs, then close the connection (which frees the lock for another
        process)."""
        self._stopping.set()
        if self._task is not None:
            await stopping.finish([self._task])
            self._task = None
        await self._disconnect()

    def readiness(self) -> str:
        """`unavailable` (the outbox database cannot be reached), `lagging` (its oldest row
        waits longer than the threshold), or `ok`."""
        if self._outbox_down or self._connection is None:
            return "unavailable"
        return "lagging" if self._oldest > self.lag_threshold else "ok"

    async def _run(self) -> None:
        delay = self.poll_interval
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not self._outbox_down:
                    log.warning(
                        "the outbox %s cannot be read (%s: %s); retrying with backoff (run "
                        "`claims-realtime outbox init` if the table is missing)",
                        self.table,
                        type(exc).__name__,
                        exc,
                    )
                self._outbox_down = True
                await self._disconnect()
                delay = min(MAX_RECONNECT_SECONDS, delay * 2)
                await stopping.pause(self._stopping, delay)
                continue
            except Exception:
                log.exception("the outbox run failed; trying again at the next poll")
            if self._outbox_down:
                log.info("the outbox %s can be read again", self.table)
            self._outbox_down = False
            delay = self.poll_interval
            await self._wait()

    async def _wait(self) -> None:
        """Until a NOTIFY, the poll interval, or a request to stop."""
        waits = [asyncio.ensure_future(event.wait()) for event in (self._wake, self._stopping)]
        try:
            await asyncio.wait(
                waits, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()

    async def run_once(self) -> None:
        """One run: lead if the lock is free; if leading, consume while there is something
        to consume (a full batch is followed by another at once); then sample what is left
        (every process does, so each one's readiness shows the lag)."""
        connection = await self._connect()
        # Cleared before reading: a NOTIFY during the run wakes the next one at once.
        self._wake.clear()
        if not self.leading:
            self.leading = await outbox.try_lead(connection, self.table)
            if self.leading:
                log.info("this process consumes the outbox %s", self.table)
        if self.leading:
            while not self._stopping.is_set():
                if await self.consume(connection) < self.batch_size:
                    break
        waiting, self._oldest = await outbox.backlog(connection, self.table)
        metrics.OUTBOX_WAITING.set(waiting)
        metrics.OUTBOX_OLDEST.set(self._oldest)

    async def consume(self, connection: asyncpg.Connection) -> int:
        """Consume one batch; answer how many rows it read, or 0 when some must wait for the
        next run (our database is down, or a row failed in a way that may pass)."""
        rows = await outbox.read(connection, self.table, self.batch_size)
        if not rows:
            return 0
        metrics.OUTBOX_BATCH_SIZE.observe(len(rows))
        rejected: list[tuple[int, str]] = []
        valid: list[tuple[OutboxRow, dict[str, Any]]] = []
        for row in rows:
            problem = self.check(row.event)
            if problem is not None:
                rejected.append((row.id, problem))
            else:
                valid.append((row, self._event(row)))
        recording = await self._record(valid, rejected)
        if not recording.rows and not rejected:
            return 0
        await outbox.settle(connection, self.table, [row.id for row in recording.rows], rejected)
        now = datetime.now(UTC)
        for row in recording.rows:
            metrics.OUTBOX_LATENCY.observe(max(0.0, (now - row.created_at).total_seconds()))
        metrics.OUTBOX_CONSUMED.inc(len(recording.rows))
        metrics.OUTBOX_REJECTED.inc(len(rejected))
        if rejected:
            log.warning(
                "%d outbox row(s) rejected to %s: %s",
                len(rejected),
                outbox.rejected_table(self.table),
                "; ".join(f"id {row_id}: {problem}" for row_id, problem in rejected[:3]),
            )
        return len(rows) if recording.complete else 0

    def _event(self, row: OutboxRow) -> dict[str, Any]:
        event = dict(row.event)
        if not event.get("event_id"):
            event["event_id"] = outbox.event_id_for(self._database, self.table, row)
        return event

    async def _record(
        self,
        valid: list[tuple[OutboxRow, dict[str, Any]]],
        rejected: list[tuple[int, str]],
    ) -> Recording:
        """Record the valid events in id order, in one transaction; a row the domain refuses
        moves to `rejected`. If the batch fails otherwise, the rows are recorded one by one,
        to find the one that fails: it and the rows behind it wait for the next run, and
        after MAX_RECORD_ATTEMPTS runs it is rejected, so that it cannot hold up the queue."""
        try:
            if not await self._publish(valid, rejected):
                return Recording([], complete=False)
            for row, _ in valid if self._attempts else ():  # a row that failed before passed
                self._attempts.pop(row.id, None)
            return Recording([row for row, _ in valid], complete=True)
        except RecordingFailed:
            log.exception("recording %d outbox events failed: trying them one by one", len(valid))
        recorded: list[OutboxRow] = []
        for item in valid:
            alone = [item]
            try:
                if not await self._publish(alone, rejected):
                    return Recording(recorded, complete=False)
            except RecordingFailed as exc:
                if not self._give_up(item[0], exc, rejected):
                    return Recording(recorded, complete=False)
                continue
            self._attempts.pop(item[0].id, None)
            recorded += [row for row, _ in alone]
        return Recording(recorded, complete=True)

    def _give_up(
        self, row: OutboxRow, exc: RecordingFailed, rejected: list[tuple[int, str]]
    ) -> bool:
        """Count a failed attempt at `row`; True once it is rejected for good."""
        attempts = self._attempts.get(row.id, 0) + 1
        if attempts < MAX_RECORD_ATTEMPTS:
            self._attempts[row.id] = attempts
            log.warning("outbox row %d failed to record (attempt %d); it waits", row.id, attempts)
            return False
        self._attempts.pop(row.id, None)
        cause = exc.__cause__ or exc
        problem = f"failed to record {attempts} times: {type(cause).__name__}: {cause}"
        rejected.append((row.id, problem))
        return True

    async def _publish(
        self,
        valid: list[tuple[OutboxRow, dict[str, Any]]],
        rejected: list[tuple[int, str]],
    ) -> bool:
        """One `Hub.publish` of the valid events (again without any the domain refuses);
        False if our database cannot take them now; RecordingFailed on any other error."""
        while valid:
            try:
                await self.hub.publish([event for _, event in valid], batch=True)
            except (InvalidInput, EventIdConflict) as exc:
                # Alone, the event refused is this one, whatever field the error names.
                index = 0 if len(valid) == 1 else _batch_index(exc.field)
                if index is None or index >= len(valid):
                    raise RecordingFailed("the domain refused an event it did not name") from exc
                row, _ = valid.pop(index)
                rejected.append((row.id, exc.detail.replace(f"events.{index}.", "")))
                continue
            except Exception as exc:
                if database_unavailable(exc) is None:
                    # Not the outbox's fault: keep its connection (and the lead).
                    raise RecordingFailed("recording outbox events failed") from exc
                if not self._ours_down:
                    log.warning("our database is unavailable: outbox rows wait until it is back")
                self._ours_down = True
                return False
            break
        if self._ours_down:
            log.info("our database is back: consuming the outbox again")
        self._ours_down = False
        return True

    async def _connect(self) -> asyncpg.Connection:
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        self.leading = False
        connection = await asyncpg.connect(
            self.url, timeout=OUTBOX_TIMEOUT_SECONDS, command_timeout=OUTBOX_TIMEOUT_SECONDS
        )
        try:
            self._database = str(await connection.fetchval("SELECT current_database()"))
            # asyncpg's own LISTEN: it runs the callback for each NOTIFY on this connection.
            await connection.add_listener(self.table, self._notified)
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
        return connection

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._wake.set()

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self.leading = False
        if connection is None or connection.is_closed():
            return
        try:
            await asyncio.wait_for(connection.close(), 2.0)
        except Exception:
            connection.terminate()


def _batch_index(field: str | None) -> int | None:
    match = _BATCH_FIELD.match(field or "")
    return int(match.group(1)) if match else None
