"""Handlers are wrapped once per operation, not once per request (claims_realtime.dispatch).

Connexion 3.3 rebuilt each operation's decorator chain for every request, inspecting the
handler's and the security check's signatures each time; here that happens once per
operation, and repeated requests still get their own parameters, bodies and answers.
Operations whose only input is the JSON body get the body the validator parsed, without
Connexion's parameter decorator; the others still go through it. Request validators are
built once per operation too, and still judge every request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from connexion import security
from connexion.decorators import parameter
from starlette.requests import Request

from claims_realtime import dispatch, http
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


@pytest.fixture
def validators_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The request validators constructed from now on, by class name."""
    built: list[str] = []
    for cls in (http.BodyValidator, http.ParametersValidator):
        original = cls.__init__

        def counting(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            built.append(type(self).__name__)
            __original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    return built


async def test_request_validators_are_built_once_per_operation(
    api: httpx.AsyncClient, validators_built: list[str]
) -> None:
    assert (await publish(api, 0)).status_code == 202
    after_first = list(validators_built)
    assert after_first == ["ParametersValidator", "BodyValidator"]
    for claim in range(1, 5):
        assert (await publish(api, claim)).status_code == 202
    assert validators_built == after_first


async def test_validation_still_refuses_per_request(api: httpx.AsyncClient) -> None:
    """Validators kept across requests still judge each one: content types accepted or
    refused, bodies valid or not, in any order."""
    batch = "/api/v1/claim-events/batch"
    good = {
        "events": [
            {"event_type": "comment_added", "claim_id": "c", "organisation_id": "o", "user_id": "u"}
        ]
    }
    bad = {"events": [{"event_type": "nonsense", "claim_id": "c", "organisation_id": "o"}]}

    def post(body: Any, content_type: str) -> Any:
        raw = json.dumps(body).encode()
        return api.post(batch, content=raw, headers={**AUTH, "Content-Type": content_type})

    assert (await post(good, "application/json")).status_code == 202
    refused = await post(good, "text/plain")
    assert refused.status_code == 415
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await post(good, "application/json")).status_code == 202
    invalid = await post(bad, "application/json")
    assert invalid.status_code == 400
    assert invalid.json()["field"].startswith("events.0.")
    # Many spellings of the Content-Type (more than are kept): each still judged.
    for n in range(12):
        spelled = f"application/json; charset=utf-8; x={n}"
        assert (await post(good, spelled)).status_code == 202, spelled
        assert (await post(bad, spelled)).status_code == 400, spelled
    assert (await post(good, "application/json; charset=latin-1")).status_code == 202


async def test_documents_and_ui_are_still_served(api: httpx.AsyncClient) -> None:
    for base in ("/api/v1", "/api/v1/realtime-subscriptions/api/v1"):
        document = await api.get(f"{base}/openapi.json")
        assert document.status_code == 200
        assert document.json()["openapi"].startswith("3.")
        assert (await api.get(f"{base}/ui/")).status_code == 200
        assert (await api.get(f"{base}/ui", follow_redirects=False)).status_code == 307
        assert (await api.post(f"{base}/openapi.json")).status_code == 405
    # A channel whose id reads like the docs' path is still a channel lookup.
    missing = await api.get("/api/v1/realtime-subscriptions/ui")
    assert missing.status_code in (400, 404)
    assert missing.headers["content-type"] == "application/problem+json"
