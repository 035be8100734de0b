"""Which fallback webhooks are due, and which process sends them: leases on fallback rows,
and what happened written back when a lease is given up. No HTTP: realtime.webhooks sends.

A channel is a candidate when its head is past both its fallback's cursor and its
subscriber's confirmations, and its `next_attempt_at` (a retry's time, or when its next owed
event falls due) has come. A process takes a batch of candidates by writing its name and an
expiry into their rows, in one transaction that locks them first, so two processes never
hold the same channel; a process that dies holding some loses them when the lease expires,
and the webhook it was sending is sent again (receivers dedupe by webhook-id).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tortoise import Tortoise

from claims_realtime.models.backends import Backend, current
from claims_realtime.models.channel import ChannelStatus
from claims_realtime.models.fallback import WebhookFallback
from claims_realtime.models.fallbacks import owed
from claims_realtime.models.sql import Script, Select, Statement

#: An open channel's head (models.channel.Channel.head_sequence), from its feed's.
_HEAD = "(fd.head - c.feed_offset)"
#: Open channels with a fallback and their feeds.
_WITH_FALLBACK = (
    " FROM webhook_fallback f JOIN channel c ON c.id = f.channel_id"
    " JOIN feed fd ON fd.id = c.feed_id"
    " WHERE f.disabled_at IS NULL AND c.status <> ?"
    f" AND {_HEAD} > f.cursor AND {_HEAD} > COALESCE(c.confirmed_sequence, 0)"
)
_CANDIDATES = (
    "SELECT f.channel_id, c.subscription_type, c.user_id, c.organisation_id,"
    f" {_HEAD} AS head_sequence, c.confirmed_sequence"
    + _WITH_FALLBACK
    + " AND COALESCE(f.next_attempt_at, f.created_at) <= ?"
    " AND (f.lease_until IS NULL OR f.lease_until < ?)"
    # Longest waiting first: a channel that just sent goes to the back.
    " ORDER BY COALESCE(f.next_attempt_at, f.created_at) LIMIT ?"
)
_CANDIDATE_COLUMNS = (
    "channel_id",
    "subscription_type",
    "user_id",
    "organisation_id",
    "head_sequence",
    "confirmed_sequence",
)
_FALLBACK_COLUMNS = (
    "channel_id",
    "url",
    "secret",
    "after_seconds",
    "event_types",
    "cursor",
    "attempts",
    "first_attempt_at",
)


@dataclass(frozen=True)
class Lease:
    """A channel whose webhooks this process may send until `until`."""

    channel_id: str
    subscription_type: str
    user_id: str
    organisation_id: str | None
    head: int
    confirmed: int
    url: str
    sealed_secret: str
    after_seconds: int
    event_types: frozenset[str]
    cursor: int
    attempts: int
    first_attempt_at: datetime | None
    until: datetime


@dataclass(frozen=True)
class Failure:
    """A webhook given up on: kept, and visible in the channel's fallback state."""

    sequence: int
    event_id: str
    attempts: int
    status: int | None
    error: str | None
    failed_at: datetime


@dataclass
class Outcome:
    """What became of a leased channel's webhooks: written back as the lease is given up."""

    channel_id: str
    cursor: int
    attempts: int
    first_attempt_at: datetime | None
    #: When to look at the channel again (None: as soon as it has something owed).
    next_attempt_at: datetime | None = None
    #: The last request made, if one was.
    last_attempt_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    disabled_at: datetime | None = None
    sent: int = 0
    failures: list[Failure] = field(default_factory=list)


def _time_or_none(backend: Backend, value: object) -> datetime | None:
    return None if value is None else backend.read_time(value)


def _lease_script(
    backend: Backend, owner: str, now: datetime, until: datetime, limit: int
) -> Script[list[Lease]]:
    bound_now = backend.bind_time(now)
    candidates = yield _candidates(backend, now, limit)
    if not candidates:
        return []
    ids = sorted(row[0] for row in candidates)
    marks = ", ".join("?" * len(ids))
    # Read again under lock: the candidate query's view may predate another process's
    # lease or its write-back; rows another process leased since then drop out here.
    rows = yield Select(
        f"SELECT {', '.join(_FALLBACK_COLUMNS)} FROM webhook_fallback"
        f" WHERE channel_id IN ({marks}) AND disabled_at IS NULL"
        " AND (lease_until IS NULL OR lease_until < ?) ORDER BY channel_id",
        [*ids, bound_now],
        _FALLBACK_COLUMNS,
        lock=True,
    )
    if not rows:
        return []
    taken = [row[0] for row in rows]
    yield [
        (
            "UPDATE webhook_fallback SET lease_owner = ?, lease_until = ?"
            f" WHERE channel_id IN ({', '.join('?' * len(taken))})",
            [owner, backend.bind_time(until), *taken],
        )
    ]
    channel = {row[0]: row for row in candidates}
    leases = []
    for fid, url, secret, after, types, cursor, attempts, first in rows:
        _, kind, user, organisation, head, confirmed = channel[fid]
        leases.append(
            Lease(
                channel_id=fid,
                subscription_type=str(kind),
                user_id=user,
                organisation_id=organisation,
                head=int(head),
                confirmed=int(confirmed or 0),
                url=url,
                sealed_secret=secret,
                after_seconds=int(after),
                event_types=frozenset(json.loads(types) if isinstance(types, str) else types),
                cursor=int(cursor),
                attempts=int(attempts),
                first_attempt_at=_time_or_none(backend, first),
                until=until,
            )
        )
    return leases


async def lease_due(owner: str, now: datetime, limit: int, lease_seconds: float) -> list[Lease]:
    """Take up to `limit` channels with webhooks to look at, for `lease_seconds`."""
    if limit <= 0:
        return []
    backend = current()
    # Most polls find nothing due: they look outside any write transaction first (on
    # SQLite, on the read connection), so that they hold no ingestion up. The transaction
    # below reads again under lock; what became due meanwhile is the next poll's.
    if not await backend.read(_candidates(backend, now, 1)):
        return []
    until = now + timedelta(seconds=lease_seconds)
    return await backend.run(_lease_script, owner, now, until, limit)


def _candidates(backend: Backend, now: datetime, limit: int) -> Select:
    bound_now = backend.bind_time(now)
    return Select(
        _CANDIDATES, [ChannelStatus.CLOSED.value, bound_now, bound_now, limit], _CANDIDATE_COLUMNS
    )


async def renew(owner: str, channel_ids: Sequence[str], until: datetime) -> None:
    """Extend this process's leases of channels it is still working on."""
    if not channel_ids:
        return
    backend = current()
    marks = ", ".join("?" * len(channel_ids))
    await backend.execute_in_transaction(
        [
            (
                "UPDATE webhook_fallback SET lease_until = ?"
                f" WHERE lease_owner = ? AND channel_id IN ({marks})",
                [backend.bind_time(until), owner, *channel_ids],
            )
        ]
    )


def _settle_statements(backend: Backend, owner: str, outcome: Outcome) -> list[Statement]:
    bind = backend.bind_time
    assignments = [
        f"cursor = {backend.greatest}(cursor, ?)",
        "attempts = ?",
        "first_attempt_at = ?",
        "next_attempt_at = ?",
        "sent = sent + ?",
        "failed = failed + ?",
        "lease_owner = NULL",
        "lease_until = NULL",
    ]
    parameters: list[object] = [
        outcome.cursor,
        outcome.attempts,
        None if outcome.first_attempt_at is None else bind(outcome.first_attempt_at),
        None if outcome.next_attempt_at is None else bind(outcome.next_attempt_at),
        outcome.sent,
        len(outcome.failures),
    ]
    if outcome.last_attempt_at is not None:
        assignments += ["last_attempt_at = ?", "last_status = ?", "last_error = ?"]
        parameters += [bind(outcome.last_attempt_at), outcome.last_status, outcome.last_error]
    if outcome.disabled_at is not None:
        assignments.append("disabled_at = ?")
        parameters.append(bind(outcome.disabled_at))
    statements: list[Statement] = [
        (
            f"UPDATE webhook_fallback SET {', '.join(assignments)}"
            " WHERE channel_id = ? AND lease_owner = ?",
            [*parameters, outcome.channel_id, owner],
        )
    ]
    for failure in outcome.failures:
        statements.append(
            (
                "INSERT INTO webhook_failure (channel_id, sequence, event_id, attempts,"
                " last_status, last_error, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                # Sent again after a crash and failed again: kept once.
                " ON CONFLICT (channel_id, sequence) DO NOTHING",
                [
                    outcome.channel_id,
                    failure.sequence,
                    failure.event_id,
                    failure.attempts,
                    failure.status,
                    failure.error,
                    bind(failure.failed_at),
                ],
            )
        )
    return statements


async def settle(owner: str, outcomes: Sequence[Outcome]) -> None:
    """Write back what became of leased channels and give their leases up, in one
    transaction. A lease another process took over meanwhile (ours expired) is left to it."""
    if not outcomes:
        return
    backend = current()
    statements = [s for outcome in outcomes for s in _settle_statements(backend, owner, outcome)]
    await backend.execute_in_transaction(statements)


async def drop_closed() -> int:
    """Remove the fallbacks of closed channels; answer how many webhooks they still owed."""
    dropped = 0
    closed = await WebhookFallback.filter(channel__status=ChannelStatus.CLOSED).prefetch_related(
        "channel"
    )
    for fallback in closed:
        dropped += await owed(fallback.channel, fallback)
        await WebhookFallback.filter(channel_id=fallback.channel.id).delete()
    return dropped


_BACKLOG = (
    f"SELECT COALESCE(SUM({_HEAD} - {{greatest}}(f.cursor,"
    " COALESCE(c.confirmed_sequence, 0))), 0), MIN(COALESCE(f.next_attempt_at, f.created_at))"
    + _WITH_FALLBACK
)


async def backlog() -> tuple[int, datetime | None]:
    """(events after fallback cursors and confirmations, counting every type: an upper bound
    of what is owed; the earliest time a channel with some is to be looked at)."""
    backend = current()
    query = backend.sql(_BACKLOG.format(greatest=backend.greatest))
    _, rows = await Tortoise.get_connection("default").execute_query(
        query, [ChannelStatus.CLOSED.value]
    )
    total, earliest = tuple(rows[0])
    return int(total or 0), _time_or_none(backend, earliest)
