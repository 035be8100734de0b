"""Handlers of a channel's fallback webhook (`/realtime-subscriptions/{channel_id}/fallback`),
and the fallback a new channel may be created with."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from claims_realtime.handlers import app_state
from claims_realtime.handlers.fallback_representations import fallback_set, fallback_state
from claims_realtime.handlers.representations import Reply, reply
from claims_realtime.models import access, fallbacks


def fallback_spec(body: dict[str, Any]) -> fallbacks.FallbackSpec:
    """The validated `FallbackRequest` object as the domain takes it."""
    return fallbacks.FallbackSpec(
        url=body["url"], after_seconds=body["after_seconds"], event_types=body.get("event_types")
    )


async def set_fallback(channel_id: str, body: dict[str, Any]) -> Reply:
    # Like reconnect, it arms delivery (to a URL of the caller's choosing): an organisation
    # channel's owner needs the coordinator role still.
    await access.authorize_channel(
        app_state.principal(), app_state.access_policy(), channel_id, rearm=True
    )
    made = await fallbacks.set_fallback(channel_id, fallback_spec(body), app_state.webhook_policy())
    return reply(fallback_set(made), 200)


async def get_fallback(channel_id: str) -> Reply:
    await access.authorize_channel(app_state.principal(), app_state.access_policy(), channel_id)
    return reply(fallback_state(await fallbacks.fallback_state(channel_id)), 200)


async def remove_fallback(channel_id: str) -> Reply:
    await access.authorize_channel(app_state.principal(), app_state.access_policy(), channel_id)
    await fallbacks.remove_fallback(channel_id)
    return Response(status_code=204)
