"""Handlers of the `claim-events` tag: ingestion, an event's receipts, and the publisher key
check they share.

Wrong keys are counted by each process on its own (unlike socket connect failures, which
the processes relay to each other): behind N processes an address may try up to N times
the limit per window, still a bound.
"""

from __future__ import annotations

from typing import Any

from connexion.lifecycle import ConnexionRequest

from claims_realtime.handlers import app_state
from claims_realtime.handlers.metrics import request_received_at
from claims_realtime.handlers.representations import (
    Reply,
    claim_event_receipts,
    publish_result,
    reply,
)
from claims_realtime.models import receipts
from claims_realtime.models.credentials import secret_matches
from claims_realtime.models.errors import TooManyAttempts
from claims_realtime.realtime.limits import FailureLimiter, scope_address


def check_publisher_key(api_key: str, request: ConnexionRequest) -> dict[str, Any] | None:
    """Connexion's `x-apikeyInfoFunc`: None (-> 401) unless the key is the publisher key;
    429 for an address with too many wrong keys lately."""
    state = request.state
    failures = state.publisher_key_failures
    address = scope_address(request.scope) or "unknown"
    if admit_publisher_key(api_key, state.publisher_key_hash, failures, address):
        return {"sub": "publisher"}
    return None


def admit_publisher_key(
    api_key: str, key_hash: str, failures: FailureLimiter, address: str
) -> bool:
    """True if `api_key` is the publisher key (`key_hash` is its hash).

    An address with too many recent wrong keys gets TooManyAttempts (429, Retry-After)
    before its key is even compared, right or wrong, until those failures age out. A wrong
    key counts against the address; a right one forgives nothing.
    """
    if failures.blocked(address):
        raise TooManyAttempts(
            "Too many requests with a wrong X-Publisher-Key from this address; "
            "retry after the time in Retry-After.",
            failures.retry_after(address),
        )
    if secret_matches(api_key, key_hash):
        return True
    failures.failed(address)
    return False


async def publish_claim_event(body: dict[str, Any]) -> Reply:
    (outcome,) = await app_state.hub().publish([body], received_at=request_received_at())
    return reply(publish_result(outcome), 202)


async def publish_claim_event_batch() -> Reply:
    # Not `body`: Connexion would parse up to 500 events a second time (the figure is in
    # docs/architecture.md, "The request path").
    body = app_state.validated_body()
    outcomes = await app_state.hub().publish(
        body["events"], batch=True, received_at=request_received_at()
    )
    return reply({"results": [publish_result(outcome) for outcome in outcomes]}, 202)


async def get_claim_event(event_id: str, page: int = 1, limit: int = 100) -> Reply:
    found = await receipts.read_receipts(event_id, page, limit, app_state.hub().retention)
    return reply(claim_event_receipts(found, page, limit))
