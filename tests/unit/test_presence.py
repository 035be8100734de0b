"""Channel status across server processes: connected while any node holds a socket."""

from __future__ import annotations

from datetime import timedelta

import pytest

from claims_realtime.models import presence, subscriptions
from claims_realtime.models.channel import Channel, ChannelStatus, SubscriptionType
from claims_realtime.models.clock import utcnow

pytestmark = pytest.mark.usefixtures("db")


async def new_channel() -> Channel:
    created = await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="usr_1")
    return created.channel


async def status(channel: Channel) -> ChannelStatus:
    await channel.refresh_from_db()
    return channel.status


async def test_disconnected_only_when_the_last_socket_of_every_node_is_gone() -> None:
    channel = await new_channel()
    for node in ("node_a", "node_a", "node_b"):
        await presence.socket_attached(channel.id, node)
    assert await presence.socket_detached(channel.id, "node_a") is False
    assert await presence.socket_detached(channel.id, "node_a") is False
    assert await status(channel) == ChannelStatus.CONNECTED
    assert await presence.socket_detached(channel.id, "node_b") is True
    assert await status(channel) == ChannelStatus.DISCONNECTED
    await presence.socket_attached(channel.id, "node_b")
    assert await status(channel) == ChannelStatus.CONNECTED


async def test_a_silent_node_is_reaped_and_its_channels_released() -> None:
    held_by_dead, shared = await new_channel(), await new_channel()
    for node in ("node_dead", "node_live"):
        await presence.register_node(node)
    await presence.socket_attached(held_by_dead.id, "node_dead")
    await presence.socket_attached(shared.id, "node_dead")
    await presence.socket_attached(shared.id, "node_live")
    await presence.Node.filter(id="node_dead").update(heartbeat_at=utcnow() - timedelta(minutes=1))

    assert await presence.reap_dead_nodes(stale_after_seconds=20) == ["node_dead"]
    assert await status(held_by_dead) == ChannelStatus.DISCONNECTED
    assert await status(shared) == ChannelStatus.CONNECTED
    assert await presence.reap_dead_nodes(stale_after_seconds=20) == []


async def test_a_leaving_node_releases_only_what_it_alone_held() -> None:
    mine, ours = await new_channel(), await new_channel()
    await presence.socket_attached(mine.id, "node_me")
    await presence.socket_attached(ours.id, "node_me")
    await presence.socket_attached(ours.id, "node_other")
    await presence.forget_node("node_me")
    assert await status(mine) == ChannelStatus.DISCONNECTED
    assert await status(ours) == ChannelStatus.CONNECTED


async def test_a_reaped_node_that_comes_back_registers_again() -> None:
    await presence.heartbeat("node_late")  # not registered (reaped while stalled)
    assert await presence.Node.filter(id="node_late").exists()


async def test_presence_never_reopens_a_closed_channel() -> None:
    channel = await new_channel()
    await subscriptions.close_channel(channel.id)
    await presence.socket_attached(channel.id, "node_a")
    assert await status(channel) == ChannelStatus.CLOSED
    await presence.socket_detached(channel.id, "node_a")
    assert await status(channel) == ChannelStatus.CLOSED
