"""Handlers of the `health` tag: what load balancers and orchestrators probe."""

from __future__ import annotations

from claims_realtime.handlers import app_state
from claims_realtime.handlers.representations import Reply, reply
from claims_realtime.models.errors import Unavailable


async def get_liveness() -> Reply:
    return reply({"status": "ok"})


async def get_readiness() -> Reply:
    readiness = await app_state.hub().readiness()
    if readiness.failing:
        unavailable = ", ".join(readiness.failing)
        raise Unavailable(f"Not ready: {unavailable} unavailable.", readiness.checks)
    return reply({"status": "ok", "checks": readiness.checks})
