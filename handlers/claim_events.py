"""Handlers of the `claim-events` tag: ingestion."""

from __future__ import annotations

from typing import Any

from connexion.lifecycle import ConnexionRequest

from claims_realtime.handlers import app_state
from claims_realtime.handlers.metrics import request_received_at
from claims_realtime.handlers.representations import Reply, publish_result, reply
from claims_realtime.publisher_key import admit_publisher_key
from claims_realtime.realtime.limits import scope_address


def check_publisher_key(api_key: str, request: ConnexionRequest) -> dict[str, Any] | None:
    """Connexion's `x-apikeyInfoFunc`: None (-> 401) unless the key is the publisher key;
    429 for an address with too many wrong keys lately."""
    state = request.state
    failures = state.publisher_key_failures
    address = scope_address(request.scope) or "unknown"
    if admit_publisher_key(api_key, state.publisher_key_hash, failures, address):
        return {"sub": "publisher"}
    return None


async def publish_claim_event(body: dict[str, Any]) -> Reply:
    (outcome,) = await app_state.hub().publish([body], received_at=request_received_at())
    return reply(publish_result(outcome), 202)


async def publish_claim_event_batch(body: dict[str, Any]) -> Reply:
    outcomes = await app_state.hub().publish(
        body["events"], batch=True, received_at=request_received_at()
    )
    return reply({"results": [publish_result(outcome) for outcome in outcomes]}, 202)
