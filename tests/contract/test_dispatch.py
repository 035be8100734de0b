"""Handlers are wrapped once per operation, not once per request (claims_realtime.dispatch).

Connexion 3.3 rebuilt each operation's decorator chain for every request, inspecting the
handler's and the security check's signatures each time; here that happens once per
operation, and repeated requests still get their own parameters, bodies and answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from connexion import security
from connexion.decorators import parameter

from claims_realtime import dispatch
from tests.helpers import PUBLISHER_KEY

AUTH = {"X-Publisher-Key": PUBLISHER_KEY}


@pytest.fixture
def inspections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions whose signatures get inspected from now on."""
    seen: list[str] = []

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def inspect(function: Callable[..., Any]) -> Any:
            seen.append(function.__name__)
            return original(function)

        return inspect

    monkeypatch.setattr(
        parameter, "inspect_function_arguments", counting(parameter.inspect_function_arguments)
    )
    # Where Connexion's security handlers look, and where ours do.
    for module in (security, dispatch):
        monkeypatch.setattr(
            module, "inspect_function_arguments", counting(module.inspect_function_arguments)
        )
    dispatch._accepts_kwarg.cache_clear()
    return seen


async def publish(api: httpx.AsyncClient, claim: int) -> httpx.Response:
    event = {
        "event_type": "comment_added",
        "claim_id": f"clm_{claim}",
        "organisation_id": "org_001",
        "user_id": "usr_owner",
    }
    return await api.post("/api/v1/claim-events/batch", json={"events": [event]}, headers=AUTH)


async def test_signatures_are_inspected_once_per_operation(
    api: httpx.AsyncClient, inspections: list[str]
) -> None:
    created = await api.post("/api/v1/realtime-subscriptions/user", json={"user_id": "usr_owner"})
    assert created.status_code == 201, created.text
    channel_id = created.json()["channel_id"]
    assert (await publish(api, 0)).status_code == 202
    after_first = list(inspections)
    # The batch handler, and the publisher key check asked about two keywords (one answer
    # each, cached): nothing more on later requests.
    assert "publish_claim_event_batch" in after_first
    assert "check_publisher_key" in after_first

    for claim in range(1, 6):
        response = await publish(api, claim)
        assert response.status_code == 202, response.text
        assert response.json()["results"][0]["channels"] == 1
    assert inspections == after_first

    # Each request still gets its own path parameter.
    detail = await api.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert detail.json()["event_count"] == 6
    missing = await api.get("/api/v1/realtime-subscriptions/chan_doesnotexist0000000")
    assert missing.status_code == 404
    again = await api.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert again.json()["channel_id"] == channel_id
    assert inspections.count("get_subscription") == 1


async def test_a_refused_publisher_key_is_refused_every_time(
    api: httpx.AsyncClient, inspections: list[str]
) -> None:
    event = {"event_type": "comment_added", "claim_id": "c", "organisation_id": "o", "user_id": "u"}
    for _ in range(3):
        response = await api.post(
            "/api/v1/claim-events/batch", json={"events": [event]}, headers={"X-Publisher-Key": "x"}
        )
        assert response.status_code == 401
    assert inspections.count("check_publisher_key") <= 2
