"""Where claim events go: the feeds of the open channels an event's organisation and user
route to, with each feed's head, read under the transaction's locks and remembered by
routing key (`Routes`) for as long as nothing else can have changed them."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from claims_realtime.models.channel import SubscriptionType
from claims_realtime.models.event import NewEvent
from claims_realtime.models.sql import Select, padded

F = TypeVar("F", bound=Callable[..., Any])

#: Routing keys a kept Routes holds before it starts again empty: each holds a few feeds
#: and their channels, so this bounds the writer process's memory whatever the keys seen.
MAX_KEYS = 100_000


@dataclass(slots=True)
class RoutedFeed:
    """What routing needs of a feed: its event types, its head as the transaction moves it,
    and its open channels with their offsets."""

    id: int
    event_types: frozenset[str]
    head: int
    channels: list[tuple[str, int]]


class Routes:
    """Feeds by routing key (organisation, user), each with its open channels, and its head
    as the last transaction to move it left it.

    A transaction reads the keys it lacks (`missing`, then `learn`, under its locks) and
    moves heads in place. Kept across transactions only where one connection makes every
    write that could change them: SQLite's writer process, which empties it whenever another
    connection committed, a call failed, or a script not marked `keeps_routes` ran.
    Everywhere else each transaction starts with an empty one, and reads every key."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._organisations: dict[str, list[RoutedFeed]] = {}
        self._users: dict[str, list[RoutedFeed]] = {}
        self._max_keys = max_keys
        self._version: int | None = None

    def clear(self) -> None:
        self._organisations.clear()
        self._users.clear()

    def still_valid(self, version: int) -> None:
        """Empty unless `version` (the database's count of other connections' commits) is
        the one seen by the last transaction."""
        if version != self._version:
            self.clear()
            self._version = version

    def missing(self, events: Iterable[NewEvent]) -> tuple[list[str], list[str]] | None:
        """The organisations and users of `events` not held, to read; None when every one is.
        Starts again empty first if full, so what it answers covers the rest."""
        if len(self._organisations) + len(self._users) >= self._max_keys:
            self.clear()
        organisations = {event.organisation_id for event in events}
        users = {event.user_id for event in events}
        organisations.difference_update(self._organisations)
        users.difference_update(self._users)
        if not organisations and not users:
            return None
        return sorted(organisations), sorted(users)

    def learn(
        self,
        organisations: Sequence[str],
        users: Sequence[str],
        feed_rows: Sequence[Sequence[Any]],
        channel_rows: Sequence[Sequence[Any]],
    ) -> None:
        """Hold the keys `missing` answered, from the rows of `feeds_query` and
        `channels_query` (a key with no open channel holds no feeds)."""
        by_organisation, by_user = _feeds_by_key(feed_rows, channel_rows)
        for organisation_id in organisations:
            self._organisations[organisation_id] = by_organisation.get(organisation_id, [])
        for user_id in users:
            self._users[user_id] = by_user.get(user_id, [])

    def feeds(self, event: NewEvent) -> list[RoutedFeed]:
        """The feeds `event`'s keys route to, whatever their event types."""
        return self._organisations[event.organisation_id] + self._users[event.user_id]


def keeps_routes(make: F) -> F:
    """Mark a script maker whose scripts leave kept Routes right: they change no channel's
    status, feed or offset, and move heads only through the Routes they are given."""
    make.keeps_routes = True  # type: ignore[attr-defined]
    return make


def marked_keeps_routes(make: Callable[..., Any]) -> bool:
    return bool(getattr(make, "keeps_routes", False))


#: Ordered by id: the order every transaction locks feed rows in.
_FEEDS = (
    "SELECT id, head FROM feed WHERE id IN (SELECT feed_id FROM channel WHERE {open}) ORDER BY id"
)
_BY_ORGANISATION = "(subscription_type = 'organisation_claims' AND organisation_id IN ({}))"
_BY_USER = "(subscription_type = 'user_claims' AND user_id IN ({}))"

_CHANNEL_COLUMNS = (
    "id",
    "subscription_type",
    "organisation_id",
    "user_id",
    "event_types",
    "feed_id",
    "feed_offset",
)
_CHANNELS = (
    f"SELECT {', '.join(_CHANNEL_COLUMNS)} FROM channel"
    " WHERE feed_id IN ({feeds}) AND status <> 'closed' ORDER BY id"
)


def feeds_query(organisations: Sequence[str], users: Sequence[str]) -> Select:
    """The feeds of the open channels of `organisations` and `users`: rows of (id, head),
    locked against concurrent ingestion and channel creation and closing (the transaction
    moves heads)."""
    conditions, parameters = [], []
    for template, keys in ((_BY_ORGANISATION, organisations), (_BY_USER, users)):
        if keys:
            ids = padded(keys)
            conditions.append(template.format(", ".join("?" * len(ids))))
            parameters += ids
    where = f"status <> 'closed' AND ({' OR '.join(conditions)})"
    return Select(_FEEDS.format(open=where), parameters, ("id", "head"), lock=True)


def channels_query(feed_rows: Sequence[Sequence[Any]]) -> Select:
    """The open channels of the locked feeds, as rows of `_CHANNEL_COLUMNS`: found by feed,
    not routed a second time. One plain query: no model objects for a batch that may reach
    thousands of channels."""
    ids = padded([row[0] for row in feed_rows])
    return Select(_CHANNELS.format(feeds=", ".join("?" * len(ids))), ids, _CHANNEL_COLUMNS)


@functools.lru_cache(maxsize=64)
def _event_types(raw: str) -> frozenset[str]:
    # Most channels share a handful of event_types lists: parse each one once.
    return frozenset(json.loads(raw))


def _feeds_by_key(
    feed_rows: Sequence[Sequence[Any]], channel_rows: Sequence[Sequence[Any]]
) -> tuple[dict[str, list[RoutedFeed]], dict[str, list[RoutedFeed]]]:
    """The locked feeds with their open channels, by organisation and by user."""
    heads = {int(feed_id): int(head) for feed_id, head in feed_rows}
    feeds: dict[int, RoutedFeed] = {}
    by_organisation: dict[str, list[RoutedFeed]] = {}
    by_user: dict[str, list[RoutedFeed]] = {}
    for channel_id, kind, organisation_id, user_id, types, feed_id, offset in channel_rows:
        feed_id = int(feed_id)
        feed = feeds.get(feed_id)
        if feed is None:
            raw = types if isinstance(types, str) else json.dumps(types)
            feed = feeds[feed_id] = RoutedFeed(feed_id, _event_types(raw), heads[feed_id], [])
            if kind == SubscriptionType.ORGANISATION_CLAIMS:
                by_organisation.setdefault(organisation_id, []).append(feed)
            else:
                by_user.setdefault(user_id, []).append(feed)
        feed.channels.append((channel_id, int(offset)))
    return by_organisation, by_user
