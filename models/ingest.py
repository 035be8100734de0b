"""Recording claim events: route each to its channels and give it the next sequence on each,
all in one transaction, committed before anyone is told it was accepted."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models.channel import Channel, ChannelStatus, SubscriptionType
from models.clock import utcnow
from models.credentials import new_event_id
from models.errors import EventIdConflict, InvalidInput
from models.event import ChannelEvent, ClaimEvent

_ATTEMPTS = 3


@dataclass(frozen=True)
class Placement:
    """The event is number `sequence` on channel `channel_id`."""

    channel_id: str
    sequence: int


@dataclass(frozen=True)
class Recorded:
    """The outcome for one submitted event."""

    event: ClaimEvent
    duplicate: bool
    #: Where it was placed by this call (empty for a duplicate: it was placed before).
    placements: tuple[Placement, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.event.channel_count)


def _fingerprint(submitted: Mapping[str, Any]) -> str:
    canonical = json.dumps(submitted, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _parse_time(value: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(field, f"{field}: {value!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise InvalidInput(field, f"{field}: {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def _data_size(data: Any) -> int:
    return len(
        json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


def _new_event(
    submitted: Mapping[str, Any], field: str, *, now: datetime, max_data_bytes: int
) -> ClaimEvent:
    data = submitted.get("data") or {}
    if _data_size(data) > max_data_bytes:
        raise InvalidInput(
            f"{field}data", f"{field}data is larger than {max_data_bytes} bytes of JSON"
        )
    occurred = submitted.get("occurred_at")
    return ClaimEvent(
        event_id=submitted.get("event_id") or new_event_id(),
        event_type=submitted["event_type"],
        claim_id=submitted["claim_id"],
        organisation_id=submitted["organisation_id"],
        user_id=submitted["user_id"],
        actor_id=submitted.get("actor_id"),
        occurred_at=_parse_time(occurred, f"{field}occurred_at") if occurred else now,
        recorded_at=now,
        data=data,
        fingerprint=_fingerprint(submitted),
    )


def _routes_to(channel: Channel, event: ClaimEvent) -> bool:
    if event.event_type not in channel.event_types:
        return False
    if channel.subscription_type == SubscriptionType.ORGANISATION_CLAIMS:
        return channel.organisation_id == event.organisation_id
    return channel.user_id == event.user_id


async def record_events(
    submitted: Sequence[Mapping[str, Any]], *, max_data_bytes: int, batch: bool
) -> list[Recorded]:
    """Record events atomically: all of them, or (on any error) none.

    A known `event_id` submitted again unchanged is a duplicate (recorded once); reused for
    different content it is an EventIdConflict. Errors name the field, prefixed with
    `events.<i>.` for a batch.
    """
    now = utcnow()
    prefixes = [f"events.{i}." if batch else "" for i in range(len(submitted))]
    # Two processes recording the same new event_id at once: the second insert fails on
    # the primary key; trying again finds the first one's row, a duplicate.
    for attempt in range(_ATTEMPTS):
        fresh = [
            _new_event(item, prefix, now=now, max_data_bytes=max_data_bytes)
            for item, prefix in zip(submitted, prefixes, strict=True)
        ]
        try:
            return await _record(fresh, prefixes, now)
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _record(fresh: list[ClaimEvent], prefixes: list[str], now: datetime) -> list[Recorded]:
    async with in_transaction():
        known = {
            event.event_id: event
            for event in await ClaimEvent.filter(event_id__in=[e.event_id for e in fresh])
        }
        results: list[Recorded | None] = [None] * len(fresh)
        to_store: list[tuple[int, ClaimEvent]] = []
        for i, event in enumerate(fresh):
            previous = known.get(event.event_id)
            if previous is not None:
                if previous.fingerprint != event.fingerprint:
                    raise EventIdConflict(event.event_id, f"{prefixes[i]}event_id")
                results[i] = Recorded(event=previous, duplicate=True)
                continue
            known[event.event_id] = event
            to_store.append((i, event))

        channels = await _candidate_channels([event for _, event in to_store])
        rows: list[ChannelEvent] = []
        touched: dict[str, Channel] = {}
        for i, event in to_store:
            placements = []
            for channel in channels:
                if _routes_to(channel, event):
                    channel.head_sequence += 1
                    touched[channel.id] = channel
                    placements.append(Placement(channel.id, channel.head_sequence))
                    rows.append(
                        ChannelEvent(
                            channel_id=channel.id,
                            sequence=channel.head_sequence,
                            event_id=event.event_id,
                            recorded_at=now,
                        )
                    )
            event.channel_count = len(placements)
            results[i] = Recorded(event=event, duplicate=False, placements=tuple(placements))

        if to_store:
            await ClaimEvent.bulk_create([event for _, event in to_store])
        if rows:
            await ChannelEvent.bulk_create(rows)
        for channel in touched.values():
            await Channel.filter(id=channel.id).update(
                head_sequence=channel.head_sequence, last_event_at=now
            )
    return [result for result in results if result is not None]


async def _candidate_channels(events: Sequence[ClaimEvent]) -> list[Channel]:
    """Open channels any of `events` may route to, locked against concurrent ingestion
    (row locks on PostgreSQL; SQLite serialises writers anyway), in a fixed order."""
    if not events:
        return []
    organisations = {event.organisation_id for event in events}
    users = {event.user_id for event in events}
    query = (
        Channel.filter(
            Q(
                subscription_type=SubscriptionType.ORGANISATION_CLAIMS,
                organisation_id__in=organisations,
            )
            | Q(subscription_type=SubscriptionType.USER_CLAIMS, user_id__in=users)
        )
        .exclude(status=ChannelStatus.CLOSED)
        .order_by("id")
        .select_for_update()
    )
    return list(await query)
