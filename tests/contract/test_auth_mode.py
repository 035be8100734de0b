"""AUTH_MODE=jwt through HTTP (in-process app), and the public default left unchanged.

Callers in these tests:
* usr_coord99: coordinator of org_001 (and a plain member of org_002);
* usr_owner: a claimant, no organisation role.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from claims_realtime.app import BASE_PATHS, CANONICAL_BASE, create_app
from claims_realtime.settings import Settings
from tests.helpers import PUBLISHER_KEY, assert_problem
from tests.tokens import JWT_SECRET, bearer, make_token

SUBS = f"{CANONICAL_BASE}/realtime-subscriptions"
COORDINATOR = bearer(make_token("usr_coord99", {"org_001": ["coordinator"], "org_002": ["viewer"]}))
OWNER = bearer(make_token("usr_owner"))
SECURED = [
    ("GET", ""),
    ("POST", "/organisation"),
    ("POST", "/user"),
    ("GET", "/chan_abc123"),
    ("DELETE", "/chan_abc123"),
    ("PUT", "/chan_abc123/reconnect"),
    ("GET", "/chan_abc123/events"),
    ("PUT", "/chan_abc123/fallback"),
    ("GET", "/chan_abc123/fallback"),
    ("DELETE", "/chan_abc123/fallback"),
]
secured = pytest.mark.parametrize(("method", "path"), SECURED)
base_paths = pytest.mark.parametrize("base", BASE_PATHS, ids=["canonical", "contract"])


def body_for(path: str) -> dict[str, Any] | None:
    if path == "/organisation":
        return {"organisation_id": "org_001", "user_id": "usr_coord99"}
    if path == "/user":
        return {"user_id": "usr_owner"}
    if path.endswith("/fallback"):
        return {"url": "https://93.184.215.14/hook", "after_seconds": 60}
    return None


async def create(api: httpx.AsyncClient, caller: dict[str, str], path: str, **body: Any):
    response = await api.post(f"{SUBS}{path}", json=body, headers=caller)
    assert response.status_code == 201, response.text
    return response.json()


# -- 401: no, wrong or expired credentials ---------------------------------------------------


@base_paths
@secured
async def test_missing_token_is_a_401_with_a_bearer_challenge(
    jwt_api: httpx.AsyncClient, base: str, method: str, path: str
) -> None:
    url = f"{base}/realtime-subscriptions{path}"
    response = await jwt_api.request(method, url, json=body_for(path))

    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="claims-realtime"'
    assert "bearer token is required" in body["detail"]


@secured
@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (f"Bearer {make_token(expires_in=-3600)}", "expired"),
        (f"Bearer {make_token(key='not-the-secret-0123456789abcdef-0123456789')}", "signature"),
        (f"Bearer {make_token(sub=None)}", "'sub'"),
        ("Bearer not.a.jwt", "malformed"),
        ("Basic dXNyOnB3ZA==", "Bearer <token>"),
        ("Bearer", "Bearer <token>"),
    ],
    ids=["expired", "wrong-signature", "no-sub", "garbage", "basic", "empty"],
)
async def test_invalid_token_is_a_401_saying_why(
    jwt_api: httpx.AsyncClient, method: str, path: str, authorization: str, detail: str
) -> None:
    headers = {"Authorization": authorization}
    response = await jwt_api.request(method, f"{SUBS}{path}", json=body_for(path), headers=headers)

    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith('Bearer realm="claims-realtime"')
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert detail in body["detail"]
    assert authorization.split(" ")[-1] not in response.text or authorization == "Bearer"


async def test_ingestion_and_health_need_no_bearer_token(jwt_api: httpx.AsyncClient) -> None:
    event = {
        "event_type": "status_changed",
        "claim_id": "clm_1",
        "organisation_id": "org_001",
        "user_id": "usr_owner",
    }
    published = await jwt_api.post(
        "/api/v1/claim-events", json=event, headers={"X-Publisher-Key": PUBLISHER_KEY}
    )
    assert published.status_code == 202, published.text
    refused = await jwt_api.post("/api/v1/claim-events", json=event, headers=COORDINATOR)
    assert_problem(refused, 401)
    assert (await jwt_api.get("/api/v1/health/live")).status_code == 200
    assert (await jwt_api.get("/api/v1/health/ready")).status_code == 200


# -- 403 and 404: what a valid caller may not do --------------------------------------------


async def test_caller_creates_their_own_user_channel(jwt_api: httpx.AsyncClient) -> None:
    created = await create(jwt_api, OWNER, "/user", user_id="usr_owner")
    assert created["user_id"] == "usr_owner"


@pytest.mark.parametrize("path", ["/user", "/organisation"])
async def test_creating_a_channel_for_someone_else_is_a_403(
    jwt_api: httpx.AsyncClient, path: str
) -> None:
    body = {**(body_for(path) or {}), "user_id": "usr_someone_else"}
    response = await jwt_api.post(f"{SUBS}{path}", json=body, headers=COORDINATOR)

    assert_problem(response, 403, field="user_id")


async def test_organisation_channel_needs_a_coordinator_role_there(
    jwt_api: httpx.AsyncClient,
) -> None:
    created = await create(
        jwt_api, COORDINATOR, "/organisation", organisation_id="org_001", user_id="usr_coord99"
    )
    assert created["organisation_id"] == "org_001"
    for caller, user_id, organisation_id in [
        (COORDINATOR, "usr_coord99", "org_002"),  # a member without the role
        (COORDINATOR, "usr_coord99", "org_003"),  # not a member
        (OWNER, "usr_owner", "org_001"),  # no roles at all
    ]:
        response = await jwt_api.post(
            f"{SUBS}/organisation",
            json={"organisation_id": organisation_id, "user_id": user_id},
            headers=caller,
        )
        assert_problem(response, 403, field="organisation_id")


async def test_coordinator_roles_are_configurable(settings: Settings) -> None:
    app = create_app(
        replace(settings, auth_mode="jwt", jwt_secret=JWT_SECRET, jwt_coordinator_roles=("lead",))
    )
    lead = bearer(make_token("usr_lead", {"org_001": ["lead"]}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            body = {"organisation_id": "org_001", "user_id": "usr_lead"}
            ok = await api.post(f"{SUBS}/organisation", json=body, headers=lead)
            assert ok.status_code == 201, ok.text
            body = {"organisation_id": "org_001", "user_id": "usr_coord99"}
            refused = await api.post(f"{SUBS}/organisation", json=body, headers=COORDINATOR)
            assert_problem(refused, 403, field="organisation_id")


async def test_list_returns_only_the_callers_channels(jwt_api: httpx.AsyncClient) -> None:
    mine = await create(jwt_api, OWNER, "/user", user_id="usr_owner")
    theirs = await create(
        jwt_api, COORDINATOR, "/organisation", organisation_id="org_001", user_id="usr_coord99"
    )

    for caller, expected in [(OWNER, mine), (COORDINATOR, theirs)]:
        response = await jwt_api.get(SUBS, headers=caller)
        assert response.status_code == 200, response.text
        listed = [channel["channel_id"] for channel in response.json()["data"]]
        assert listed == [expected["channel_id"]]
        assert response.json()["pagination"]["total"] == 1
    by_org = await jwt_api.get(SUBS, params={"organisation_id": "org_001"}, headers=OWNER)
    assert by_org.json()["data"] == []
    own_filter = await jwt_api.get(SUBS, params={"user_id": "usr_owner"}, headers=OWNER)
    assert [c["channel_id"] for c in own_filter.json()["data"]] == [mine["channel_id"]]


async def test_listing_someone_elses_channels_is_a_403(jwt_api: httpx.AsyncClient) -> None:
    response = await jwt_api.get(SUBS, params={"user_id": "usr_coord99"}, headers=OWNER)

    assert_problem(response, 403, field="user_id")


async def test_another_users_channel_looks_like_no_channel(jwt_api: httpx.AsyncClient) -> None:
    theirs = await create(
        jwt_api, COORDINATOR, "/organisation", organisation_id="org_001", user_id="usr_coord99"
    )
    url = f"{SUBS}/{theirs['channel_id']}"

    for method, suffix in [("GET", ""), ("PUT", "/reconnect"), ("DELETE", "")]:
        response = await jwt_api.request(method, url + suffix, headers=OWNER)
        body = assert_problem(response, 404)
        unknown = await jwt_api.request(method, f"{SUBS}/chan_nosuchchannel{suffix}", headers=OWNER)
        assert_problem(unknown, 404)
        assert body["title"] == unknown.json()["title"]
    # Nothing happened to it: its owner still sees it open.
    still = await jwt_api.get(url, headers=COORDINATOR)
    assert still.status_code == 200 and still.json()["status"] == "connected"


async def test_owner_reads_reconnects_and_closes_their_channel(jwt_api: httpx.AsyncClient) -> None:
    mine = await create(jwt_api, OWNER, "/user", user_id="usr_owner")
    url = f"{SUBS}/{mine['channel_id']}"

    assert (await jwt_api.get(url, headers=OWNER)).status_code == 200
    assert (await jwt_api.put(f"{url}/reconnect", headers=OWNER)).status_code == 200
    assert (await jwt_api.delete(url, headers=OWNER)).status_code == 200
    assert_problem(await jwt_api.get(url, headers=OWNER), 410)
    # Someone else still gets a 404 for the closed channel, not its closed_at.
    assert_problem(await jwt_api.get(url, headers=COORDINATOR), 404)


async def test_reconnecting_an_organisation_channel_needs_the_role_still(
    jwt_api: httpx.AsyncClient,
) -> None:
    created = await create(
        jwt_api, COORDINATOR, "/organisation", organisation_id="org_001", user_id="usr_coord99"
    )
    url = f"{SUBS}/{created['channel_id']}"
    demoted = bearer(make_token("usr_coord99", {"org_001": ["viewer"]}))

    assert_problem(await jwt_api.put(f"{url}/reconnect", headers=demoted), 403)
    assert (await jwt_api.get(url, headers=demoted)).status_code == 200
    assert (await jwt_api.delete(url, headers=demoted)).status_code == 200


# -- the document and the public default -----------------------------------------------------


@base_paths
async def test_jwt_mode_document_declares_bearer_security(
    jwt_api: httpx.AsyncClient, base: str
) -> None:
    document = (await jwt_api.get(f"{base}/openapi.json")).json()

    assert document["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            if path.startswith("/realtime-subscriptions"):
                assert operation["security"] == [{"BearerAuth": []}], (verb, path)
                assert "401" in operation["responses"], (verb, path)


@base_paths
async def test_public_mode_needs_no_token_and_declares_none(
    api: httpx.AsyncClient, base: str
) -> None:
    document = (await api.get(f"{base}/openapi.json")).json()
    for path, item in document["paths"].items():
        if path.startswith("/realtime-subscriptions"):
            assert all("security" not in op for op in item.values() if isinstance(op, dict))

    created = await api.post(f"{base}/realtime-subscriptions/user", json={"user_id": "usr_x"})
    assert created.status_code == 201, created.text
    # A bearer token is simply ignored in public mode, even an invalid one.
    listed = await api.get(f"{base}/realtime-subscriptions", headers={"Authorization": "Bearer x"})
    assert listed.status_code == 200
    assert any(c["user_id"] == "usr_x" for c in listed.json()["data"])
