"""One claim event as recorded, and its receipts: each channel it was placed on, and
whether that channel's subscriber was sent it and confirmed it. No HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from claims_realtime.models.channel import SubscriptionType
from claims_realtime.models.errors import EventNotFound
from claims_realtime.models.event import ChannelEvent, ClaimEvent
from claims_realtime.models.history import Retention


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


async def read_receipts(
    event_id: str, page: int, limit: int, retention: Retention
) -> EventReceipts:
    """The event and one page of its receipts, by channel id; EventNotFound if no kept event
    has this id. Older than the TTL counts as gone even before prune deletes it, as history
    reads do; placements prune has removed (count retention) are no longer listed."""
    event = await ClaimEvent.filter(event_id=event_id, recorded_at__gte=retention.cutoff()).first()
    if event is None:
        raise EventNotFound(event_id)
    placements = ChannelEvent.filter(event_id=event_id)
    total = await placements.count()
    rows = (
        await placements.order_by("channel_id")
        .offset((page - 1) * limit)
        .limit(limit)
        .select_related("channel")
    )
    receipts = [
        Receipt(
            channel_id=row.channel.id,
            subscription_type=row.channel.subscription_type,
            user_id=row.channel.user_id,
            sequence=int(row.sequence),
            delivered=_reached(row.channel.delivered_sequence, int(row.sequence)),
            acknowledged=_reached(row.channel.confirmed_sequence, int(row.sequence)),
        )
        for row in rows
    ]
    return EventReceipts(event=event, receipts=receipts, total=total)
