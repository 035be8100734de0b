"""Requests reach their handlers through Connexion's own request path, extended only at its
documented points (validator map, resolver, security map): repeated requests each get their
own parameters, bodies and answers, and are each validated. The batch handler reads the body
its validator parsed instead of having Connexion parse it a second time.
"""

from __future__ import annotations

import json
from typing import Any

import fastjsonschema
import httpx
import pytest
from starlette.requests import Request

from claims_realtime import validation
from tests.helpers import PUBLISHER_KEY

AUTH = {"X-Publisher-Key": PUBLISHER_KEY}


async def publish(api: httpx.AsyncClient, claim: int) -> httpx.Response:
    event = {
        "event_type": "comment_added",
        "claim_id": f"clm_{claim}",
        "organisation_id": "org_001",
        "user_id": "usr_owner",
    }
    return await api.post("/api/v1/claim-events/batch", json={"events": [event]}, headers=AUTH)


async def test_repeated_requests_each_get_their_own_input(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/v1/realtime-subscriptions/user", json={"user_id": "usr_owner"})
    assert created.status_code == 201, created.text
    channel_id = created.json()["channel_id"]
    assert (await publish(api, 0)).status_code == 202

    for claim in range(1, 6):
        response = await publish(api, claim)
        assert response.status_code == 202, response.text
        assert response.json()["results"][0]["channels"] == 1

    # Each request still gets its own path parameter.
    detail = await api.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert detail.json()["event_count"] == 6
    missing = await api.get("/api/v1/realtime-subscriptions/chan_doesnotexist0000000")
    assert missing.status_code == 404
    again = await api.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert again.json()["channel_id"] == channel_id


async def test_a_refused_publisher_key_is_refused_every_time(api: httpx.AsyncClient) -> None:
    event = {"event_type": "comment_added", "claim_id": "c", "organisation_id": "o", "user_id": "u"}
    for _ in range(3):
        response = await api.post(
            "/api/v1/claim-events/batch", json={"events": [event]}, headers={"X-Publisher-Key": "x"}
        )
        assert response.status_code == 401
    assert (await publish(api, 0)).status_code == 202


@pytest.fixture
def body_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths whose body is parsed through Starlette's Request.json from now on (what
    Connexion does for a handler that takes `body`)."""
    seen: list[str] = []
    starlette_json = Request.json

    async def counting_json(request: Request) -> Any:
        seen.append(str(request.scope["path"]))
        return await starlette_json(request)

    monkeypatch.setattr(Request, "json", counting_json)
    return seen


async def test_the_batch_handler_gets_the_validated_body(
    api: httpx.AsyncClient, body_parses: list[str]
) -> None:
    created = await api.post("/api/v1/realtime-subscriptions/user", json={"user_id": "usr_owner"})
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == "usr_owner"
    for claim in range(3):
        response = await publish(api, claim)
        assert response.status_code == 202, response.text
    # The batch is parsed once, by its validator: not a second time for the handler.
    assert "/api/v1/claim-events/batch" not in body_parses
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

    listed = await api.get("/api/v1/realtime-subscriptions", params={"limit": 5})
    assert listed.status_code == 200
    assert listed.json()["pagination"]["limit"] == 5
    channel_id = created.json()["channel_id"]
    detail = await api.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert detail.json()["event_count"] == 4
    # Handlers that take `body` get it from Connexion, as the document's other operations do.
    assert body_parses == ["/api/v1/realtime-subscriptions/user", "/api/v1/claim-events"]


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
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every body schema compiled by fastjsonschema from now on (by its title, if any)."""
    seen: list[str] = []
    compile_ = fastjsonschema.compile

    def counting(schema: dict[str, Any], **kwargs: Any) -> Any:
        seen.append(str(schema.get("title", "")))
        return compile_(schema, **kwargs)

    monkeypatch.setattr(validation.fastjsonschema, "compile", counting)
    return seen


async def test_body_schemas_are_compiled_once_not_per_request(
    api: httpx.AsyncClient, compiled: list[str]
) -> None:
    """Connexion builds the body validator per request; what is costly to build, the compiled
    schema, is kept per schema across them."""
    assert (await publish(api, 0)).status_code == 202
    after_first = list(compiled)
    assert len(after_first) <= 1
    for claim in range(1, 5):
        assert (await publish(api, claim)).status_code == 202
    assert compiled == after_first


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
