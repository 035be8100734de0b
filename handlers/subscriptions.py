"""Handlers of the `realtime-subscriptions` tag: the source contract's six operations, and
`listChannelEvents` (a channel's history)."""

from __future__ import annotations

from typing import Any

from claims_realtime.handlers import app_state
from claims_realtime.handlers.fallback_representations import fallback_set
from claims_realtime.handlers.fallbacks import fallback_spec
from claims_realtime.handlers.representations import (
    Reply,
    channel_event_page,
    created_subscription,
    reply,
    subscription_detail,
    subscription_summary,
)
from claims_realtime.models import access, fallbacks, history, subscriptions
from claims_realtime.models.channel import ChannelStatus, SubscriptionType
from claims_realtime.models.clock import rfc3339


async def list_subscriptions(
    page: int = 1,
    limit: int = 20,
    organisation_id: str | None = None,
    user_id: str | None = None,
    subscription_type: str | None = None,
    status: str | None = None,
) -> Reply:
    where = access.scope_listing(
        app_state.principal(),
        subscriptions.ChannelFilter(
            organisation_id=organisation_id,
            user_id=user_id,
            subscription_type=SubscriptionType(subscription_type) if subscription_type else None,
            status=ChannelStatus(status) if status else None,
        ),
    )
    channels, total = await subscriptions.list_channels(where, page=page, limit=limit)
    return reply(
        {
            "data": [subscription_summary(channel) for channel in channels],
            "pagination": {"page": page, "limit": limit, "total": total},
        },
        200,
    )


async def subscribe_to_organisation_claims(body: dict[str, Any]) -> Reply:
    access.authorize_create(
        app_state.principal(),
        app_state.access_policy(),
        SubscriptionType.ORGANISATION_CLAIMS,
        user_id=body["user_id"],
        organisation_id=body["organisation_id"],
    )
    return await _create(
        body, SubscriptionType.ORGANISATION_CLAIMS, organisation_id=body["organisation_id"]
    )


async def subscribe_to_user_claims(body: dict[str, Any]) -> Reply:
    access.authorize_create(
        app_state.principal(),
        app_state.access_policy(),
        SubscriptionType.USER_CLAIMS,
        user_id=body["user_id"],
    )
    return await _create(body, SubscriptionType.USER_CLAIMS)


async def _create(
    body: dict[str, Any], subscription_type: SubscriptionType, organisation_id: str | None = None
) -> Reply:
    """Create the channel, with its fallback when the body asks for one (one transaction)."""
    channel = {
        "user_id": body["user_id"],
        "organisation_id": organisation_id,
        "event_types": body.get("event_types"),
        "max_active": app_state.settings().max_channels_per_user,
    }
    if "fallback" not in body:
        created = await subscriptions.create_channel(subscription_type, **channel)
        return reply(
            created_subscription(created.channel, created.token, app_state.public_base_url()), 201
        )
    made = await fallbacks.create_channel_with_fallback(
        subscription_type, fallback_spec(body["fallback"]), app_state.webhook_policy(), **channel
    )
    created = made.created
    return reply(
        {
            **created_subscription(created.channel, created.token, app_state.public_base_url()),
            "fallback": fallback_set(made.fallback),
        },
        201,
    )


async def get_subscription(channel_id: str) -> Reply:
    await access.authorize_channel(app_state.principal(), app_state.access_policy(), channel_id)
    channel = await subscriptions.open_channel(channel_id)
    return reply(subscription_detail(channel, app_state.public_base_url()))


async def list_channel_events(channel_id: str, after_sequence: int = 0, limit: int = 100) -> Reply:
    await access.authorize_channel(app_state.principal(), app_state.access_policy(), channel_id)
    page = await history.read_page(channel_id, after_sequence, limit, app_state.hub().retention)
    return await channel_event_page(page)


async def reconnect(channel_id: str) -> Reply:
    await access.authorize_channel(
        app_state.principal(), app_state.access_policy(), channel_id, rearm=True
    )
    channel, missed = await app_state.hub().reconnect(channel_id)
    assert channel.reconnected_at is not None
    return reply(
        {
            "channel_id": channel.id,
            "status": "connected",
            "reconnected_at": rfc3339(channel.reconnected_at),
            "missed_events": missed,
        },
        200,
    )


async def unsubscribe(channel_id: str) -> Reply:
    await access.authorize_channel(app_state.principal(), app_state.access_policy(), channel_id)
    channel = await app_state.hub().close_channel(channel_id)
    assert channel.closed_at is not None
    return reply(
        {
            "channel_id": channel.id,
            "unsubscribed": True,
            "closed_at": rfc3339(channel.closed_at),
        },
        200,
    )
