"""Helpers shared by every test layer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import socketio

PUBLISHER_KEY = "test-publisher-key-0123456789abcdef"
#: Every test server's and app's WEBHOOK_SECRET_KEY: processes sharing a database must share it
#: (models.fallbacks.keys_agree), and the PostgreSQL pass runs them all on one database.
WEBHOOK_SECRET_KEY = "Y2xhaW1zLXJlYWx0aW1lLXRlc3Qtc2VhbGluZy1rZXk="
ROOT = Path(__file__).resolve().parent.parent


def unique(prefix: str) -> str:
    """An id no other test uses: tests share servers and databases."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem+json response with `status` (and `field`, when given)."""
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.text[:500]}"
    )
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/problem+json"), content_type
    body: dict[str, Any] = response.json()
    assert body["status"] == status, body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert "type" in body, body
    if field is not None:
        assert body.get("field") == field, f"expected field {field!r}: {str(body)[:500]}"
    return body


async def connect_refusal(
    base_url: str, namespace: str, auth: dict[str, Any]
) -> dict[str, Any] | None:
    """Open `namespace` once with a plain python-socketio client: the server's connect_error
    payload ({message, data: {code}}), or None when it accepted (the client then leaves)."""
    errors: list[Any] = []
    sio = socketio.AsyncClient(reconnection=False)

    async def on_connect_error(data: Any = None) -> None:
        errors.append(data)

    sio.on("connect_error", on_connect_error, namespace=namespace)
    try:
        await sio.connect(base_url, namespaces=[namespace], auth=auth, wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        assert errors, "the connection failed without a connect_error"
        refusal: dict[str, Any] = errors[0]
        return refusal
    finally:
        await sio.shutdown()
    return None


async def placements(channel_id: str) -> list[tuple[int, str]]:
    """(sequence, event_id) of every stored position of the channel's feed that is the
    channel's (after its offset, up to where it was closed), in order: what the history
    holds for it, read straight from the tables."""
    from claims_realtime.models.channel import Channel
    from claims_realtime.models.event import FeedEvent

    channel = await Channel.get(id=channel_id)
    offset = int(channel.feed_offset)
    rows = FeedEvent.filter(feed_id=channel.feed_id, position__gt=offset)
    if channel.closed_position is not None:
        rows = rows.filter(position__lte=channel.closed_position)
    found = await rows.order_by("position").values_list("position", "event_id")
    return [(int(position) - offset, str(event_id)) for position, event_id in found]


async def age_history(
    channel_id: str, recorded_at: Any, *, after: int = 0, up_to: int | None = None
) -> None:
    """Set `recorded_at` of the channel's events (those after sequence `after`, up to
    `up_to`), as if they were recorded then: what retention by age looks at."""
    from claims_realtime.models.channel import Channel
    from claims_realtime.models.event import FeedEvent

    channel = await Channel.get(id=channel_id)
    offset = int(channel.feed_offset)
    rows = FeedEvent.filter(feed_id=channel.feed_id, position__gt=offset + after)
    if up_to is not None:
        rows = rows.filter(position__lte=offset + up_to)
    await rows.update(recorded_at=recorded_at)
