"""Channel lifecycle: create, list, read, reconnect, close. No HTTP, no Socket.IO.

A channel joins its routing's feed when it is created (models.event.Feed) and leaves it when
it is closed: both lock the feed's row and read its head, as ingestion locks it to append,
so every event is either before a channel (not its own) or after it, never in between."""

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
from claims_realtime.models.event import Feed

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
    types = canonical_event_types(event_types)
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
        feed = await _locked_feed(connection, subscription_type, user_id, organisation_id, types)
        channel = await Channel.create(
            using_db=connection,
            id=new_channel_id(),
            feed=feed,
            feed_offset=feed.head,
            subscription_type=subscription_type,
            organisation_id=organisation_id,
            user_id=user_id,
            event_types=types,
            status=ChannelStatus.CONNECTED,
            token_hash=hash_secret(token),
            created_at=utcnow(),
        )
        if then is not None:
            await then(connection, channel)
    return NewChannel(channel=channel, token=token)


def feed_name(
    subscription_type: SubscriptionType,
    user_id: str,
    organisation_id: str | None,
    event_types: Sequence[str],
) -> str:
    """The shared feed of channels that route alike (ingestion routes organisation channels
    by organisation, user channels by user, then by event type)."""
    key = organisation_id if subscription_type == SubscriptionType.ORGANISATION_CLAIMS else user_id
    return f"{subscription_type.value}:{key}:{','.join(event_types)}"


async def _locked_feed(
    connection: BaseDBAsyncClient,
    subscription_type: SubscriptionType,
    user_id: str,
    organisation_id: str | None,
    event_types: Sequence[str],
) -> Feed:
    """The routing's feed, created if it is the first such channel, its row locked until the
    transaction ends. The INSERT comes first: on SQLite it takes the write lock before the
    head is read, and on PostgreSQL two creators of a new feed make it once."""
    name = feed_name(subscription_type, user_id, organisation_id, event_types)
    backend = current()
    await connection.execute_query(
        backend.sql("INSERT INTO feed (name, head) VALUES (?, 0) ON CONFLICT (name) DO NOTHING"),
        [name],
    )
    return await Feed.filter(name=name).using_db(connection).select_for_update().get()


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
    page_query = query.select_related("feed").order_by("-created_at", "-id")
    rows = await page_query.offset((page - 1) * limit).limit(limit)
    return list(rows), total


async def channel_or_none(channel_id: str) -> Channel | None:
    """The channel with its feed (which its head is read from), closed or not."""
    return await Channel.filter(id=channel_id).select_related("feed").first()


async def find_channel(channel_id: str) -> Channel:
    """The channel, closed or not; ChannelNotFound if there is none."""
    channel = await channel_or_none(channel_id)
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
    async with in_transaction() as connection:
        channel = await find_channel(channel_id)
        if channel.status != ChannelStatus.CLOSED:
            # Events the feed holds now are the channel's; any appended later are not.
            locked = Feed.filter(id=channel.feed_id).using_db(connection).select_for_update()
            channel.feed = feed = await locked.get()
            channel.closed_position = feed.head
            had_events = feed.head > channel.feed_offset
            channel.closed_event_at = feed.last_event_at if had_events else None
            channel.status = ChannelStatus.CLOSED
            channel.closed_at = utcnow()
            await channel.save(
                update_fields=["status", "closed_at", "closed_position", "closed_event_at"]
            )
    return channel
