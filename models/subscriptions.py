"""Channel lifecycle: create, list, read, reconnect, close. No HTTP, no Socket.IO."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from claims_realtime.models.backends import current
from claims_realtime.models.channel import ALL_EVENT_TYPES, Channel, ChannelStatus, SubscriptionType
from claims_realtime.models.clock import utcnow
from claims_realtime.models.credentials import hash_secret, new_channel_id, new_token
from claims_realtime.models.errors import ChannelClosed, ChannelNotFound, TooManyChannels

#: First key of the locks serialising channel creation per user (PostgreSQL: advisory
#: locks): keeps them apart from any other use of such locks in the same database.
CREATE_LOCK_SPACE = 0x63686E6C  # "chnl"


@dataclass(frozen=True)
class NewChannel:
    """A channel just created, with its token: the only time the token is known."""

    channel: Channel
    token: str


@dataclass(frozen=True)
class ChannelFilter:
    organisation_id: str | None = None
    user_id: str | None = None
    subscription_type: SubscriptionType | None = None
    status: ChannelStatus | None = None


def canonical_event_types(event_types: Sequence[str] | None) -> list[str]:
    """The requested types in canonical order; all of them when none were named."""
    if not event_types:
        return list(ALL_EVENT_TYPES)
    wanted = set(event_types)
    return [t for t in ALL_EVENT_TYPES if t in wanted]


async def create_channel(
    subscription_type: SubscriptionType,
    *,
    user_id: str,
    organisation_id: str | None = None,
    event_types: Sequence[str] | None = None,
    max_active: int = 0,
    then: Callable[[BaseDBAsyncClient, Channel], Awaitable[object]] | None = None,
) -> NewChannel:
    """Create a channel; it starts `connected`, as the contract shows.

    `then(connection, channel)`, when given, runs in the same transaction once the channel
    is inserted (a fallback set with it): either both are created or neither.

    With `max_active` > 0, TooManyChannels if `user_id` already has that many channels
    that are not closed. The count and the insert share one transaction, serialised per
    user by a lock on the user id held until it commits (two concurrent creates would
    otherwise both count 99 and both insert).
    """
    token = new_token()
    async with in_transaction() as connection:
        if max_active > 0:
            await current().lock_until_commit(connection, CREATE_LOCK_SPACE, user_id)
            active = (
                await Channel.filter(user_id=user_id)
                .exclude(status=ChannelStatus.CLOSED)
                .using_db(connection)
                .count()
            )
            if active >= max_active:
                raise TooManyChannels(user_id, max_active)
        channel = await Channel.create(
            using_db=connection,
            id=new_channel_id(),
            subscription_type=subscription_type,
            organisation_id=organisation_id,
            user_id=user_id,
            event_types=canonical_event_types(event_types),
            status=ChannelStatus.CONNECTED,
            token_hash=hash_secret(token),
            created_at=utcnow(),
        )
        if then is not None:
            await then(connection, channel)
    return NewChannel(channel=channel, token=token)


async def list_channels(
    where: ChannelFilter, *, page: int, limit: int
) -> tuple[list[Channel], int]:
    """One page of channels, newest first, and the total matching `where`.

    Without a status filter only active (not closed) channels are listed.
    """
    query = Channel.all()
    if where.status is None:
        query = query.exclude(status=ChannelStatus.CLOSED)
    else:
        query = query.filter(status=where.status)
    if where.organisation_id is not None:
        query = query.filter(organisation_id=where.organisation_id)
    if where.user_id is not None:
        query = query.filter(user_id=where.user_id)
    if where.subscription_type is not None:
        query = query.filter(subscription_type=where.subscription_type)
    total = await query.count()
    rows = await query.order_by("-created_at", "-id").offset((page - 1) * limit).limit(limit)
    return list(rows), total


async def find_channel(channel_id: str) -> Channel:
    """The channel, closed or not; ChannelNotFound if there is none."""
    channel = await Channel.get_or_none(id=channel_id)
    if channel is None:
        raise ChannelNotFound(channel_id)
    return channel


async def open_channel(channel_id: str) -> Channel:
    """The channel if it is not closed: ChannelNotFound, or ChannelClosed (410) otherwise."""
    channel = await find_channel(channel_id)
    if channel.status == ChannelStatus.CLOSED:
        assert channel.closed_at is not None
        raise ChannelClosed(channel_id, channel.closed_at)
    return channel


async def reconnect_channel(channel_id: str) -> tuple[Channel, int]:
    """Mark the channel connected; answer it with the events after its resume point."""
    async with in_transaction():
        channel = await open_channel(channel_id)
        channel.status = ChannelStatus.CONNECTED
        channel.reconnected_at = utcnow()
        await channel.save(update_fields=["status", "reconnected_at"])
    missed = max(0, channel.head_sequence - channel.resume_sequence)
    return channel, missed


async def close_channel(channel_id: str) -> Channel:
    """Close the channel (idempotent: a closed channel keeps its first `closed_at`)."""
    async with in_transaction():
        channel = await find_channel(channel_id)
        if channel.status != ChannelStatus.CLOSED:
            channel.status = ChannelStatus.CLOSED
            channel.closed_at = utcnow()
            await channel.save(update_fields=["status", "closed_at"])
    return channel
