"""Handlers of the `health` tag: what load balancers and orchestrators probe."""

from __future__ import annotations

from claims_realtime.handlers import app_state
from claims_realtime.handlers.representations import Reply, reply
from claims_realtime.models.errors import Unavailable


async def get_liveness() -> Reply:
    return reply({"status": "ok"})


async def get_readiness() -> Reply:
    checks = await app_state.hub().readiness()
    # The outbox is reported, not required: this process serves its sockets and the API
    # without it, and the outbox rows wait for it safely.
    failing = sorted(
        name for name, state in checks.items() if state == "unavailable" and name != "outbox"
    )
    if failing:
        raise Unavailable(f"Not ready: {', '.join(failing)} unavailable.", checks)
    return reply({"status": "ok", "checks": checks})
