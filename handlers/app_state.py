"""What handlers need from the running app, read from the request's lifespan state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

from connexion import request
from connexion.context import context

from claims_realtime.models.access import Policy, Principal
from claims_realtime.models.fallbacks import WebhookPolicy

if TYPE_CHECKING:
    from claims_realtime.realtime.hub import Hub

#: Where claims_realtime.validation.BodyValidator leaves the JSON body it parsed and
#: validated: in the request's ASGI scope, under `extensions`.
VALIDATED_BODY = "claims_realtime.validated_body"


class HandlerSettings(Protocol):
    """The settings handlers read (the lifespan's `claims_realtime.settings.Settings`)."""

    @property
    def public_url(self) -> str | None: ...

    @property
    def max_channels_per_user(self) -> int: ...

    @property
    def jwt_coordinator_roles(self) -> tuple[str, ...]: ...


def hub() -> Hub:
    return cast("Hub", request.state.hub)


def settings() -> HandlerSettings:
    return cast(HandlerSettings, request.state.settings)


def webhook_policy() -> WebhookPolicy:
    """The keys sealing fallback webhook secrets, and the hosts trusted (webhook_key.py)."""
    return cast(WebhookPolicy, request.state.webhook_policy)


def validated_body() -> Any:
    """The request's JSON body as the body validator parsed it. A handler with large bodies
    reads it here instead of taking `body`, which Connexion would parse a second time.
    Only for operations whose body is required JSON: validation always parsed it then."""
    return request.scope["extensions"][VALIDATED_BODY]


def principal() -> Principal | None:
    """The authenticated caller (AUTH_MODE=jwt), or None in public mode."""
    token_info = context.get("token_info") or {}
    found = token_info.get("principal")
    return found if isinstance(found, Principal) else None


def access_policy() -> Policy:
    return Policy(coordinator_roles=settings().jwt_coordinator_roles)


def public_base_url() -> str:
    """`ws(s)://host[:port]` that clients reach this service at.

    PUBLIC_URL when configured (http -> ws, https -> wss); otherwise the request's own
    scheme and Host, which is right when clients talk to us directly.
    """
    configured = settings().public_url
    if configured:
        base = configured
    else:
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        base = f"{request.url.scheme}://{host}"
    scheme, rest = base.split("://", 1)
    return {"http": "ws", "https": "wss"}.get(scheme, scheme) + "://" + rest
