"""How a channel looks on the wire (the OpenAPI schemas of the same names)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.responses import Response

from claims_realtime.models.channel import Channel, ChannelStatus, SubscriptionType
from claims_realtime.models.clock import rfc3339, rfc3339_or_none
from claims_realtime.models.history import HistoryPage
from claims_realtime.models.ingest import Recorded
from claims_realtime.models.receipts import EventReceipts
from claims_realtime.realtime.protocol import envelope_json, event_body, prepare_fields

#: What handlers return: the response itself, which Connexion sends as it is.
Reply = Response


def reply(body: dict[str, Any], status: int = 200) -> Reply:
    """A JSON reply, serialised here as Connexion's jsonifier would (`json.dumps`, a final
    newline). Handed a body instead, Connexion 3.3 works out the content type on every
    request, and must be told it: our operations also declare `application/problem+json`
    (for errors) and it does not choose between the two by status code (a bare body was a
    500). Its inference and serialisation were ~65 us of a 10-event batch's ~1 ms."""
    return Response(json.dumps(body) + "\n", status_code=status, media_type="application/json")


def websocket_url(base_url: str, channel_id: str) -> str:
    return f"{base_url}/channels/{channel_id}"


def _identity(channel: Channel) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel_id": channel.id,
        "subscription_type": channel.subscription_type.value,
    }
    # As in the contract's examples, user channels carry no organisation_id at all.
    if channel.subscription_type == SubscriptionType.ORGANISATION_CLAIMS:
        body["organisation_id"] = channel.organisation_id
    body["user_id"] = channel.user_id
    body["event_types"] = list(channel.event_types)
    return body


def _receipts(channel: Channel) -> dict[str, Any]:
    """What the channel's subscriber was sent and confirmed, as positions were last written
    back (by every process, each flush interval)."""
    delivered, acknowledged = channel.delivered_sequence, channel.confirmed_sequence
    return {
        "delivered_sequence": None if delivered is None else int(delivered),
        "acknowledged_sequence": None if acknowledged is None else int(acknowledged),
        "pending_events": max(0, int(channel.head_sequence) - int(acknowledged or 0)),
    }


def created_subscription(channel: Channel, token: str, base_url: str) -> dict[str, Any]:
    return {
        **_identity(channel),
        "websocket_url": websocket_url(base_url, channel.id),
        "channel_token": token,
        "status": channel.status.value,
        "created_at": rfc3339(channel.created_at),
    }


def subscription_summary(channel: Channel) -> dict[str, Any]:
    body = {
        **_identity(channel),
        "status": channel.status.value,
        "created_at": rfc3339(channel.created_at),
        "last_event_at": rfc3339_or_none(channel.last_event_at),
        **_receipts(channel),
    }
    if channel.status == ChannelStatus.CLOSED and channel.closed_at is not None:
        body["closed_at"] = rfc3339(channel.closed_at)
    return body


def subscription_detail(channel: Channel, base_url: str) -> dict[str, Any]:
    return {
        **_identity(channel),
        "status": channel.status.value,
        "event_count": channel.event_count,
        "websocket_url": websocket_url(base_url, channel.id),
        "created_at": rfc3339(channel.created_at),
        "last_event_at": rfc3339_or_none(channel.last_event_at),
        **_receipts(channel),
    }


#: Envelopes built between two turns of the event loop: a page holds up to 1,000, and
#: sockets whose events are due should not wait for a whole page to be built.
ENVELOPES_PER_TURN = 100


async def channel_event_page(page: HistoryPage) -> Reply:
    """A page of history, each event in the envelope its sockets receive, as the same JSON
    text: built by concatenation, as socket packets are."""
    envelopes: list[str] = []
    for start in range(0, len(page.events), ENVELOPES_PER_TURN):
        if start:
            await asyncio.sleep(0)
        envelopes.extend(
            envelope_json(page.channel_id, row.sequence, prepare_fields(row))
            for row in page.events[start : start + ENVELOPES_PER_TURN]
        )
    rest = json.dumps(
        {
            "head_sequence": page.head_sequence,
            "first_available_sequence": page.first_available_sequence,
            "unavailable": page.unavailable,
            "next_after_sequence": page.next_after,
        }
    )
    return Response(
        f'{{"data":[{",".join(envelopes)}],{rest[1:]}\n',
        status_code=200,
        media_type="application/json",
    )


def claim_event_receipts(found: EventReceipts, page: int, limit: int) -> dict[str, Any]:
    """The event as recorded (the body its envelopes carry, with when it was recorded) and a
    page of its receipts, paged as listSubscriptions pages channels."""
    return {
        **event_body(found.event),
        "recorded_at": rfc3339(found.event.recorded_at),
        "channels": int(found.event.channel_count),
        "receipts": {
            "data": [
                {
                    "channel_id": receipt.channel_id,
                    "subscription_type": receipt.subscription_type.value,
                    "user_id": receipt.user_id,
                    "sequence": receipt.sequence,
                    "delivered": receipt.delivered,
                    "acknowledged": receipt.acknowledged,
                }
                for receipt in found.receipts
            ],
            "pagination": {"page": page, "limit": limit, "total": found.total},
        },
    }


def publish_result(outcome: Recorded) -> dict[str, Any]:
    return {
        "event_id": outcome.event.event_id,
        "channels": outcome.channels,
        "duplicate": outcome.duplicate,
    }
