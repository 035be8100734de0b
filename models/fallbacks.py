"""A channel's fallback webhook: set, replace, remove, and read with where its delivery
stands. No HTTP here: realtime.webhooks sends them.

Setting a fallback answers a new signing secret, the only time it is shown; setting it again
rotates the secret. Events recorded before a fallback was first set never fire; replacing it
keeps its place, so what was owed goes to the new URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from claims_realtime.models import webhook_urls
from claims_realtime.models.channel import Channel, SubscriptionType
from claims_realtime.models.clock import utcnow
from claims_realtime.models.errors import FallbackNotFound, InvalidInput, Unavailable
from claims_realtime.models.event import FeedEvent
from claims_realtime.models.fallback import WebhookFailure, WebhookFallback, WebhookKeyCheck
from claims_realtime.models.subscriptions import (
    NewChannel,
    canonical_event_types,
    create_channel,
    open_channel,
)
from claims_realtime.models.webhook_secrets import SecretBox, SecretUnreadable, new_signing_secret

MIN_AFTER_SECONDS = 10
MAX_AFTER_SECONDS = 7 * 86400
#: Final failures shown with a fallback's state, newest first.
RECENT_FAILURES = 10


@dataclass(frozen=True)
class FallbackSpec:
    """What the caller asks for: where, after how long, for which event types."""

    url: str
    after_seconds: int
    #: None or empty: every type the channel delivers.
    event_types: Sequence[str] | None = None


@dataclass(frozen=True)
class WebhookPolicy:
    """What the server's settings allow: the keys that seal secrets, and the trusted hosts."""

    box: SecretBox
    allowed_hosts: tuple[str, ...] = ()
    #: False when this process's keys are not the other processes' (keys_agree): it then
    #: neither seals new secrets nor sends webhooks.
    keys_agree: bool = True


@dataclass(frozen=True)
class FallbackSet:
    """A fallback just set, with its signing secret: the only time the secret is known."""

    fallback: WebhookFallback
    secret: str
    #: Where delivery stands, as FallbackState has it: a replaced fallback keeps its place.
    pending: int = 0
    recent_failures: Sequence[WebhookFailure] = ()


@dataclass(frozen=True)
class FallbackState:
    fallback: WebhookFallback
    #: Events owed and not yet sent (due or not yet due).
    pending: int
    recent_failures: list[WebhookFailure]


async def check_spec(
    spec: FallbackSpec, channel_event_types: Sequence[str], policy: WebhookPolicy
) -> list[str]:
    """The spec's event types, in canonical order, if the spec may be used; InvalidInput
    naming the `fallback.*` field otherwise, or Unavailable if this process's sealing keys
    are not the others'."""
    if not policy.keys_agree:
        raise Unavailable(
            "This server process cannot seal webhook secrets: its WEBHOOK_SECRET_KEY is not "
            "the one the other processes use. Give every process the same WEBHOOK_SECRET_KEY.",
            {"webhook_secret_key": "mismatch"},
        )
    if not MIN_AFTER_SECONDS <= spec.after_seconds <= MAX_AFTER_SECONDS:
        raise InvalidInput(
            "fallback.after_seconds",
            f"fallback.after_seconds must be between {MIN_AFTER_SECONDS} and "
            f"{MAX_AFTER_SECONDS}, got {spec.after_seconds}",
        )
    wanted = canonical_event_types(spec.event_types)
    if spec.event_types:
        foreign = [t for t in wanted if t not in channel_event_types]
        if foreign:
            raise InvalidInput(
                "fallback.event_types",
                f"fallback.event_types names {', '.join(foreign)}, which the channel does not "
                f"deliver (it delivers {', '.join(channel_event_types)})",
            )
    else:
        wanted = list(channel_event_types)
    await webhook_urls.check_resolves(spec.url, policy.allowed_hosts)
    return wanted


async def put_fallback(
    connection: BaseDBAsyncClient,
    channel: Channel,
    spec: FallbackSpec,
    event_types: list[str],
    policy: WebhookPolicy,
) -> FallbackSet:
    """Within `connection`'s transaction: set or replace the checked fallback of `channel`
    (see check_spec), with a new secret."""
    secret = new_signing_secret()
    now = utcnow()
    settings = {
        "url": spec.url,
        "after_seconds": spec.after_seconds,
        "event_types": event_types,
        "secret": policy.box.seal(secret),
        # A new URL or secret deserves a prompt first try, and a 410 is answered afresh.
        "attempts": 0,
        "first_attempt_at": None,
        "next_attempt_at": None,
        "disabled_at": None,
        "updated_at": now,
    }
    fallback = (
        await WebhookFallback.filter(channel_id=channel.id)
        .using_db(connection)
        .select_for_update()
        .first()
    )
    if fallback is None:
        fallback = await WebhookFallback.create(
            using_db=connection,
            channel_id=channel.id,
            cursor=channel.head_sequence,
            created_at=now,
            **settings,
        )
    else:
        fallback.update_from_dict(settings)
        await fallback.save(using_db=connection, update_fields=list(settings))
    return FallbackSet(fallback, secret)


async def set_fallback(channel_id: str, spec: FallbackSpec, policy: WebhookPolicy) -> FallbackSet:
    """Set or replace the fallback of an open channel (ChannelNotFound, ChannelClosed)."""
    channel = await open_channel(channel_id)
    event_types = await check_spec(spec, channel.event_types, policy)
    async with in_transaction() as connection:
        # The head as of now: what was recorded before the fallback existed never fires.
        await channel.refresh_from_db(
            fields=["confirmed_sequence", "closed_position"], using_db=connection
        )
        made = await put_fallback(connection, channel, spec, event_types, policy)
        return replace(
            made,
            pending=await owed(channel, made.fallback, connection),
            recent_failures=await recent_failures(channel_id, connection),
        )


@dataclass(frozen=True)
class NewChannelWithFallback:
    """A channel just created, with its token, and its fallback with its secret."""

    created: NewChannel
    fallback: FallbackSet


async def create_channel_with_fallback(
    subscription_type: SubscriptionType,
    spec: FallbackSpec,
    policy: WebhookPolicy,
    *,
    user_id: str,
    organisation_id: str | None = None,
    event_types: Sequence[str] | None = None,
    max_active: int = 0,
) -> NewChannelWithFallback:
    """Create a channel and its fallback in one transaction (subscriptions.create_channel).
    The spec is checked first, so a refused one (InvalidInput) creates nothing."""
    fallback_types = await check_spec(spec, canonical_event_types(event_types), policy)
    made: list[FallbackSet] = []

    async def attach(connection: BaseDBAsyncClient, channel: Channel) -> None:
        made.append(await put_fallback(connection, channel, spec, fallback_types, policy))

    created = await create_channel(
        subscription_type,
        user_id=user_id,
        organisation_id=organisation_id,
        event_types=event_types,
        max_active=max_active,
        then=attach,
    )
    return NewChannelWithFallback(created, made[0])


async def remove_fallback(channel_id: str) -> None:
    """Remove an open channel's fallback, and its kept failures (a fallback set later starts
    afresh); what it still owed is not sent."""
    await open_channel(channel_id)
    async with in_transaction() as connection:
        if not await WebhookFallback.filter(channel_id=channel_id).using_db(connection).delete():
            raise FallbackNotFound(channel_id)
        await WebhookFailure.filter(channel_id=channel_id).using_db(connection).delete()


async def fallback_state(channel_id: str) -> FallbackState:
    """An open channel's fallback and where its delivery stands (FallbackNotFound)."""
    channel = await open_channel(channel_id)
    fallback = await WebhookFallback.get_or_none(channel_id=channel_id)
    if fallback is None:
        raise FallbackNotFound(channel_id)
    return FallbackState(fallback, await owed(channel, fallback), await recent_failures(channel_id))


async def recent_failures(
    channel_id: str, connection: BaseDBAsyncClient | None = None
) -> list[WebhookFailure]:
    """The channel's latest final failures, newest first."""
    query = WebhookFailure.filter(channel_id=channel_id).order_by("-sequence")
    return list(await query.limit(RECENT_FAILURES).using_db(connection))


async def owed(
    channel: Channel, fallback: WebhookFallback, connection: BaseDBAsyncClient | None = None
) -> int:
    """Events of the fallback's types after both its cursor and the subscriber's
    confirmations: what it would still send, due or not."""
    start = max(int(fallback.cursor), int(channel.confirmed_sequence or 0))
    head, offset = channel.head_sequence, int(channel.feed_offset)
    if start >= head:
        return 0
    return (
        await FeedEvent.filter(
            feed_id=channel.feed_id,
            position__gt=offset + start,
            position__lte=offset + head,
            event__event_type__in=fallback.event_types,
        )
        .using_db(connection)
        .count()
    )


#: What the key check row seals.
KEY_CHECK_TEXT = "claims-realtime webhook sealing key"


async def keys_agree(box: SecretBox) -> bool:
    """Whether `box` opens the database's key check, which the first process to ask seals
    with its own key. Processes whose keys differ (each generated its own under a DATA_DIR
    of its own, say) would otherwise each seal secrets the others cannot read."""
    check, _ = await WebhookKeyCheck.get_or_create(
        id=1, defaults={"sealed": box.seal(KEY_CHECK_TEXT), "created_at": utcnow()}
    )
    try:
        return box.open(check.sealed) == KEY_CHECK_TEXT
    except SecretUnreadable:
        return False


@dataclass(frozen=True)
class Resealed:
    resealed: int
    #: Secrets none of the keys opens (left as they are).
    unreadable: int


async def reseal_secrets(box: SecretBox, batch: int = 500) -> Resealed:
    """Seal every stored signing secret, and the key check, again with the first of `box`'s
    keys, so that the others can be dropped from WEBHOOK_SECRET_KEY. Safe beside running
    servers: each row is replaced only if it still holds what was read (a secret set since
    was sealed with the first key already)."""
    resealed = unreadable = 0
    after = ""
    while (
        rows := await WebhookFallback.filter(channel_id__gt=after)
        .order_by("channel_id")
        .limit(batch)
        .values_list("channel_id", "secret")
    ):
        for channel_id, sealed in rows:
            try:
                fresh = box.reseal(sealed)
            except SecretUnreadable:
                unreadable += 1
                continue
            resealed += await WebhookFallback.filter(channel_id=channel_id, secret=sealed).update(
                secret=fresh
            )
        after = rows[-1][0]
    check = await WebhookKeyCheck.get_or_none(id=1)
    if check is not None:
        try:
            fresh = box.reseal(check.sealed)
        except SecretUnreadable:
            unreadable += 1
        else:
            await WebhookKeyCheck.filter(id=1, sealed=check.sealed).update(sealed=fresh)
    return Resealed(resealed, unreadable)
