"""One claim event as recorded, and its receipts: each channel it was placed on, and
whether that channel's subscriber was sent it and confirmed it. No HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from claims_realtime.models.backends import current
from claims_realtime.models.channel import SubscriptionType
from claims_realtime.models.errors import EventNotFound
from claims_realtime.models.event import ClaimEvent
from claims_realtime.models.history import Retention
from claims_realtime.models.sql import Select


@dataclass(frozen=True)
class Receipt:
    """Event's place on one channel, against the positions last written back to the channel
    row (every process flushes them each interval, so these trail a socket by at most that)."""

    channel_id: str
    subscription_type: SubscriptionType
    user_id: str
    sequence: int
    delivered: bool
    acknowledged: bool


@dataclass(frozen=True)
class EventReceipts:
    event: ClaimEvent
    receipts: list[Receipt]
    #: Placements still kept, over all pages.
    total: int


def _reached(position: int | None, sequence: int) -> bool:
    return position is not None and int(position) >= sequence


#: The channels an event was placed on: those of each feed it is on whose offset is below its
#: position and which were not closed before it.
_PLACED = (
    " FROM feed_event fe JOIN channel c ON c.feed_id = fe.feed_id"
    " AND c.feed_offset < fe.position"
    " AND (c.closed_position IS NULL OR c.closed_position >= fe.position)"
    " WHERE fe.event_id = ?"
)
_RECEIPT_COLUMNS = (
    "id",
    "subscription_type",
    "user_id",
    "sequence",
    "delivered_sequence",
    "confirmed_sequence",
)
_RECEIPTS = (
    "SELECT c.id, c.subscription_type, c.user_id, fe.position - c.feed_offset AS sequence,"
    " c.delivered_sequence, c.confirmed_sequence" + _PLACED + " ORDER BY c.id LIMIT ? OFFSET ?"
)


async def read_receipts(
    event_id: str, page: int, limit: int, retention: Retention
) -> EventReceipts:
    """The event and one page of its receipts, by channel id; EventNotFound if no kept event
    has this id. Older than the TTL counts as gone even before prune deletes it, as history
    reads do; placements prune has removed (count retention) are no longer listed."""
    event = await ClaimEvent.filter(event_id=event_id, recorded_at__gte=retention.cutoff()).first()
    if event is None:
        raise EventNotFound(event_id)
    backend = current()
    ((total,),) = await backend.read(Select("SELECT COUNT(*) AS n" + _PLACED, [event_id], ("n",)))
    rows = await backend.read(
        Select(_RECEIPTS, [event_id, limit, (page - 1) * limit], _RECEIPT_COLUMNS)
    )
    receipts = [
        Receipt(
            channel_id=channel_id,
            subscription_type=SubscriptionType(kind),
            user_id=user_id,
            sequence=int(sequence),
            delivered=_reached(delivered, int(sequence)),
            acknowledged=_reached(confirmed, int(sequence)),
        )
        for channel_id, kind, user_id, sequence, delivered, confirmed in rows
    ]
    return EventReceipts(event=event, receipts=receipts, total=int(total))
