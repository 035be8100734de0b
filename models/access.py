"""Who may do what with channels when callers are authenticated (AUTH_MODE=jwt).

No HTTP here: handlers pass in the caller, a `Principal` built from a verified bearer token.
In public mode there is no caller (`None`) and every rule allows everything, as the
contract does.

* create: the channel's `user_id` must be the caller's own id (403 naming `user_id`); an
  organisation channel also needs a coordinator-type role in that organisation (403 naming
  `organisation_id`).
* list: only the caller's channels; a `user_id` filter naming someone else is a 403.
* read, reconnect, close: only the caller's channels. Another user's channel answers 404,
  exactly as a channel that does not exist: channel ids cannot be probed.
* reconnect of an organisation channel also needs the role still (it re-arms delivery);
  closing one's own channel never does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from claims_realtime.models.channel import Channel, SubscriptionType
from claims_realtime.models.errors import ChannelNotFound, Forbidden
from claims_realtime.models.roles import DEFAULT_COORDINATOR_ROLES
from claims_realtime.models.subscriptions import ChannelFilter, find_channel


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user id and their roles per organisation."""

    user_id: str
    #: organisation_id -> the caller's roles in it.
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def has_role(self, organisation_id: str, wanted: Collection[str]) -> bool:
        return not self.roles.get(organisation_id, frozenset()).isdisjoint(wanted)


@dataclass(frozen=True)
class Policy:
    """The configurable part of the rules."""

    coordinator_roles: tuple[str, ...] = DEFAULT_COORDINATOR_ROLES


def authorize_create(
    principal: Principal | None,
    policy: Policy,
    subscription_type: SubscriptionType,
    *,
    user_id: str,
    organisation_id: str | None = None,
) -> None:
    """Forbidden unless the caller may create this channel."""
    if principal is None:
        return
    if user_id != principal.user_id:
        raise Forbidden("user_id must be your own user id (the token's sub).", "user_id")
    if subscription_type == SubscriptionType.ORGANISATION_CLAIMS:
        assert organisation_id is not None
        _require_coordinator(principal, policy, organisation_id)


def scope_listing(principal: Principal | None, where: ChannelFilter) -> ChannelFilter:
    """`where`, narrowed to the caller's own channels."""
    if principal is None:
        return where
    if where.user_id is not None and where.user_id != principal.user_id:
        raise Forbidden("You may only list your own channels; user_id must be yours.", "user_id")
    return replace(where, user_id=principal.user_id)


def check_channel(
    principal: Principal | None, policy: Policy, channel: Channel, *, rearm: bool = False
) -> None:
    """ChannelNotFound unless the channel is the caller's; Forbidden when `rearm`ing an
    organisation channel without a coordinator role there."""
    if principal is None:
        return
    if channel.user_id != principal.user_id:
        raise ChannelNotFound(channel.id)
    if rearm and channel.subscription_type == SubscriptionType.ORGANISATION_CLAIMS:
        assert channel.organisation_id is not None
        _require_coordinator(principal, policy, channel.organisation_id)


async def authorize_channel(
    principal: Principal | None, policy: Policy, channel_id: str, *, rearm: bool = False
) -> None:
    """`check_channel` on the stored channel (closed or not). No query in public mode."""
    if principal is None:
        return
    check_channel(principal, policy, await find_channel(channel_id), rearm=rearm)


def _require_coordinator(principal: Principal, policy: Policy, organisation_id: str) -> None:
    if not principal.has_role(organisation_id, policy.coordinator_roles):
        raise Forbidden(
            f"Organisation channels need one of the roles {', '.join(policy.coordinator_roles)} "
            "in that organisation.",
            "organisation_id",
        )
