"""What handlers need from the running app, read from the request's lifespan state."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from connexion import request
from connexion.context import context

from claims_realtime.models.access import Policy, Principal

if TYPE_CHECKING:
    from claims_realtime.realtime.hub import Hub
    from claims_realtime.settings import Settings


def hub() -> Hub:
    return cast("Hub", request.state.hub)


def settings() -> Settings:
    return cast("Settings", request.state.settings)


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
