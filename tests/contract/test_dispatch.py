"""Handlers are wrapped once per operation, not once per request (claims_realtime.dispatch).

Connexion 3.3 rebuilt each operation's decorator chain for every request, inspecting the
handler's and the security check's signatures each time; here that happens once per
operation, and repeated requests still get their own parameters, bodies and answers.
Operations whose only input is the JSON body get the body the validator parsed, without
Connexion's parameter decorator; the others still go through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from connexion import security
from connexion.decorators import parameter
from starlette.requests import Request

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
    inspected = inspections.count("get_subscription")
    assert inspected >= 1
    missing = await api.get("/api/v1/realtime-subscriptions/chan_doesnotexist0000000")
    assert missing.status_code == 404
    again = await api.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert again.json()["channel_id"] == channel_id
    assert inspections.count("get_subscription") == inspected


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


@pytest.fixture
def argument_preparations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The handlers whose arguments Connexion's parameter decorator prepares from now on,
    and `json` for every parse of a body through Starlette's Request.json."""
    seen: list[str] = []
    prep_kwargs = parameter.prep_kwargs
    starlette_json = Request.json

    def counting_prep_kwargs(request: Any, **kwargs: Any) -> Any:
        seen.append(str(request.scope["path"]))
        return prep_kwargs(request, **kwargs)

    async def counting_json(request: Request) -> Any:
        seen.append("json")
        return await starlette_json(request)

    monkeypatch.setattr(parameter, "prep_kwargs", counting_prep_kwargs)
    monkeypatch.setattr(Request, "json", counting_json)
    return seen


async def test_a_body_only_operation_gets_the_validated_body(
    api: httpx.AsyncClient, argument_preparations: list[str]
) -> None:
    created = await api.post("/api/v1/realtime-subscriptions/user", json={"user_id": "usr_owner"})
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == "usr_owner"
    for claim in range(3):
        response = await publish(api, claim)
        assert response.status_code == 202, response.text
    single = await api.post(
        "/api/v1/claim-events",
        json={
            "event_type": "status_changed",
            "claim_id": "c",
            "organisation_id": "o",
            "user_id": "usr_owner",
            "data": {"n": 1.5},
        },
        headers=AUTH,
    )
    assert single.status_code == 202, single.text
    # Neither Connexion's parameter decorator nor a second parse of the body.
    assert argument_preparations == []

    # Operations with path or query parameters still go through Connexion's decorator.
    listed = await api.get("/api/v1/realtime-subscriptions", params={"limit": 5})
    assert listed.status_code == 200
    assert listed.json()["pagination"]["limit"] == 5
    channel_id = created.json()["channel_id"]
    detail = await api.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert detail.json()["event_count"] == 4
    assert argument_preparations == [
        "/api/v1/realtime-subscriptions",
        f"/api/v1/realtime-subscriptions/{channel_id}",
    ]


async def test_the_body_only_path_answers_as_connexion_did(api: httpx.AsyncClient) -> None:
    """Status, headers and body bytes as Connexion's response decorator produced them."""
    event = {
        "event_id": "evt_dispatch_1",
        "event_type": "comment_added",
        "claim_id": "clm_1",
        "organisation_id": "org_001",
        "user_id": "usr_owner",
    }
    response = await api.post("/api/v1/claim-events/batch", json={"events": [event]}, headers=AUTH)
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert response.content == (
        b'{"results": [{"event_id": "evt_dispatch_1", "channels": 0, "duplicate": false}]}\n'
    )
    assert response.headers["content-length"] == str(len(response.content))
