"""The six `realtime-subscriptions` operations, through HTTP, under both mount points.

Each test talks to a fresh in-process app (the `api` fixture: in-memory SQLite,
PUBLIC_URL https://realtime.example.com) and checks one behaviour of the contract in
openapi/claims-realtime.yaml: shapes, status codes, problem+json errors naming the bad
field, pagination and filters, the closed-channel lifecycle, and that the canonical prefix
(`/api/v1`) and the contract's doubled one answer identically.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from claims_realtime.app import BASE_PATHS, CANONICAL_BASE, CONTRACT_BASE, create_app
from claims_realtime.settings import Settings
from tests.helpers import PUBLISHER_KEY, assert_problem, unique

#: All five event types, in the canonical order.
ALL_TYPES = [
    "status_changed", "claim_submitted", "claim_approved", "claim_rejected", "comment_added"
]  # fmt: skip
CHANNEL_ID = re.compile(r"^chan_[a-z0-9]{20}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
SUMMARY_KEYS = {
    "channel_id", "subscription_type", "organisation_id", "user_id", "event_types", "status",
    "created_at", "last_event_at", "delivered_sequence", "acknowledged_sequence",
    "pending_events",
}  # fmt: skip
#: A channel's receipts before anything was recorded, delivered or confirmed.
NO_RECEIPTS = {"delivered_sequence": None, "acknowledged_sequence": None, "pending_events": 0}

base_paths = pytest.mark.parametrize("base", BASE_PATHS, ids=["canonical", "contract"])


# -- helpers ------------------------------------------------------------------------------


def subs(base: str) -> str:
    """The collection URL of the subscription operations under `base`."""
    return f"{base}/realtime-subscriptions"


async def create_org_channel(api: httpx.AsyncClient, base: str = CANONICAL_BASE, **kw: Any):
    body = {"organisation_id": "org_001", "user_id": "usr_coord99", **kw}
    response = await api.post(f"{subs(base)}/organisation", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def create_user_channel(api: httpx.AsyncClient, base: str = CANONICAL_BASE, **kw: Any):
    body = {"user_id": "usr_owner", **kw}
    response = await api.post(f"{subs(base)}/user", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def publish(api: httpx.AsyncClient, **event: Any) -> dict[str, Any]:
    """Publish one claim event (defaults route to org_001 and usr_owner) and answer the 202."""
    body = {
        "event_type": "status_changed",
        "claim_id": "clm_7781",
        "organisation_id": "org_001",
        "user_id": "usr_owner",
        **event,
    }
    response = await api.post(
        "/api/v1/claim-events", json=body, headers={"X-Publisher-Key": PUBLISHER_KEY}
    )
    assert response.status_code == 202, response.text
    return response.json()


async def get_channel(api: httpx.AsyncClient, channel_id: str, base: str = CANONICAL_BASE):
    response = await api.get(f"{subs(base)}/{channel_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def list_channels(api: httpx.AsyncClient, base: str = CANONICAL_BASE, **params: Any):
    response = await api.get(subs(base), params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def delete_channel(api: httpx.AsyncClient, channel_id: str, base: str = CANONICAL_BASE):
    response = await api.delete(f"{subs(base)}/{channel_id}")
    assert response.status_code == 200, response.text
    return response.json()


def parse_time(value: str) -> datetime:
    assert RFC3339_UTC.match(value), f"not RFC 3339 UTC with Z: {value!r}"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_recent(value: str) -> None:
    moment = parse_time(value)
    now = datetime.now(UTC)
    assert now - timedelta(seconds=30) <= moment <= now + timedelta(seconds=1), value


@asynccontextmanager
async def client_for(settings: Settings, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to an app built from `settings` (lifespan included)."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


# -- POST /realtime-subscriptions/organisation and /user ------------------------------------


@base_paths
async def test_create_organisation_channel(api: httpx.AsyncClient, base: str) -> None:
    response = await api.post(
        f"{subs(base)}/organisation", json={"organisation_id": "org_001", "user_id": "usr_c"}
    )

    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert CHANNEL_ID.match(body["channel_id"]), body["channel_id"]
    assert body["subscription_type"] == "organisation_claims"
    assert body["organisation_id"] == "org_001"
    assert body["user_id"] == "usr_c"
    assert body["websocket_url"] == "wss://realtime.example.com/channels/" + body["channel_id"]
    assert body["status"] == "connected"
    assert_recent(body["created_at"])
    assert isinstance(body["channel_token"], str) and len(body["channel_token"]) >= 32
    assert body["event_types"] == ALL_TYPES, "all five types, in canonical order, when omitted"


@base_paths
async def test_create_user_channel(api: httpx.AsyncClient, base: str) -> None:
    response = await api.post(f"{subs(base)}/user", json={"user_id": "usr_84cd12ef"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert CHANNEL_ID.match(body["channel_id"]), body["channel_id"]
    assert body["subscription_type"] == "user_claims"
    assert "organisation_id" not in body, "user channels carry no organisation_id at all"
    assert body["user_id"] == "usr_84cd12ef"
    assert body["websocket_url"] == "wss://realtime.example.com/channels/" + body["channel_id"]
    assert body["status"] == "connected"
    assert_recent(body["created_at"])
    assert isinstance(body["channel_token"], str) and len(body["channel_token"]) >= 32
    assert body["event_types"] == ALL_TYPES


@pytest.mark.parametrize("kind", ["organisation", "user"])
async def test_requested_event_types_are_kept_in_canonical_order(
    api: httpx.AsyncClient, kind: str
) -> None:
    requested = ["comment_added", "status_changed", "claim_rejected"]
    create = create_org_channel if kind == "organisation" else create_user_channel

    body = await create(api, event_types=requested)

    assert body["event_types"] == ["status_changed", "claim_rejected", "comment_added"]
    detail = await get_channel(api, body["channel_id"])
    assert detail["event_types"] == ["status_changed", "claim_rejected", "comment_added"]


async def test_two_creates_give_different_ids_and_tokens(api: httpx.AsyncClient) -> None:
    first = await create_org_channel(api)
    second = await create_org_channel(api)

    assert first["channel_id"] != second["channel_id"]
    assert first["channel_token"] != second["channel_token"]


@pytest.mark.parametrize(
    ("base_url", "expected_scheme"),
    [("http://testserver", "ws://testserver"), ("https://testserver", "wss://testserver")],
)
async def test_websocket_url_derives_from_the_request_without_public_url(
    settings: Settings, base_url: str, expected_scheme: str
) -> None:
    async with client_for(dataclasses.replace(settings, public_url=None), base_url) as client:
        created = await create_user_channel(client)
        detail = await get_channel(client, created["channel_id"])

    expected = f"{expected_scheme}/channels/{created['channel_id']}"
    assert created["websocket_url"] == expected
    assert detail["websocket_url"] == expected


# -- invalid input: 400 problem+json naming the field -------------------------------------


def _org(**overrides: Any) -> dict[str, Any]:
    return {"organisation_id": "org_001", "user_id": "usr_coord99", **overrides}


INVALID_ORGANISATION_BODIES = [
    pytest.param(_org(organisation_id="org 1"), "organisation_id", id="bad-pattern"),
    pytest.param(_org(organisation_id="o" * 65), "organisation_id", id="too-long"),
    pytest.param(_org(user_id=""), "user_id", id="empty-user-id"),
    pytest.param({"organisation_id": "org_001"}, "user_id", id="missing-user-id"),
    pytest.param({"user_id": "usr_1"}, "organisation_id", id="missing-organisation-id"),
    pytest.param(_org(colour="blue"), "colour", id="unknown-property"),
    pytest.param(_org(event_types=[]), "event_types", id="empty-event-types"),
    pytest.param(
        _org(event_types=["status_changed", "status_changed"]), "event_types", id="duplicates"
    ),
    pytest.param(
        _org(event_types=["status_changed", "claim_archived"]),
        "event_types.1",
        id="unknown-event-type",
    ),
    pytest.param(_org(organisation_id=1), "organisation_id", id="not-a-string"),
    pytest.param([], "body", id="not-an-object"),
]


@base_paths
@pytest.mark.parametrize(("body", "field"), INVALID_ORGANISATION_BODIES)
async def test_invalid_organisation_subscription_is_a_400(
    api: httpx.AsyncClient, base: str, body: Any, field: str
) -> None:
    response = await api.post(f"{subs(base)}/organisation", json=body)

    assert_problem(response, 400, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "user_id", id="missing-user-id"),
        pytest.param({"user_id": "usr 1"}, "user_id", id="bad-pattern"),
        pytest.param({"user_id": "usr_1", "organisation_id": "org_1"}, "organisation_id",
                     id="organisation-id-not-allowed"),
        pytest.param({"user_id": "usr_1", "event_types": ["nope"]}, "event_types.0",
                     id="unknown-event-type"),
    ],
)  # fmt: skip
async def test_invalid_user_subscription_is_a_400(
    api: httpx.AsyncClient, body: Any, field: str
) -> None:
    response = await api.post(f"{subs(CANONICAL_BASE)}/user", json=body)

    assert_problem(response, 400, field)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"organisation_id": "org_001",', id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"null", id="null"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_undecodable_body_is_a_400_naming_the_body(
    api: httpx.AsyncClient, content: bytes
) -> None:
    response = await api.post(
        f"{subs(CANONICAL_BASE)}/organisation",
        content=content,
        headers={"Content-Type": "application/json"},
    )

    assert_problem(response, 400, "body")


async def test_deeply_nested_json_is_a_400_not_a_500(api: httpx.AsyncClient) -> None:
    nested = b"[" * 5000 + b"]" * 5000
    content = b'{"organisation_id": "org_001", "user_id": "usr_1", "extra": ' + nested + b"}"

    response = await api.post(
        f"{subs(CANONICAL_BASE)}/organisation",
        content=content,
        headers={"Content-Type": "application/json"},
    )

    body = assert_problem(response, 400)
    assert body.get("field") in ("body", "extra"), body


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_body_that_is_not_json_media_type_is_a_415(
    api: httpx.AsyncClient, content_type: str
) -> None:
    response = await api.post(
        f"{subs(CANONICAL_BASE)}/organisation",
        content=b'{"organisation_id": "org_001", "user_id": "usr_1"}',
        headers={"Content-Type": content_type},
    )

    assert_problem(response, 415)


@base_paths
@pytest.mark.parametrize(
    ("path", "body"),
    [("organisation", b'{"organisation_id": "org_001", "user_id": "usr_1"}'),
     ("user", b'{"user_id": "usr_1"}')],
    ids=["organisation", "user"],
)  # fmt: skip
async def test_json_body_without_content_type_is_not_a_server_error(
    api: httpx.AsyncClient, base: str, path: str, body: bytes
) -> None:
    # httpx sends no Content-Type for raw `content`. Either treating the body as JSON
    # (201) or refusing the media type (415) is acceptable; a 500 is not.
    response = await api.post(f"{subs(base)}/{path}", content=body)

    assert response.status_code in (201, 415), (
        f"POST {path} without Content-Type answered {response.status_code}: {response.text}"
    )
    if response.status_code == 415:
        assert_problem(response, 415)


@base_paths
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("foo=1", "foo"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("page=0", "page"),
        ("page=abc", "page"),
        ("page=1000001", "page"),
        ("status=sleeping", "status"),
        ("subscription_type=x", "subscription_type"),
        ("organisation_id=org%201", "organisation_id"),
        ("user_id=", "user_id"),
    ],
)
async def test_invalid_list_query_is_a_400(
    api: httpx.AsyncClient, base: str, query: str, field: str
) -> None:
    response = await api.get(f"{subs(base)}?{query}")

    assert_problem(response, 400, field)


@base_paths
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("PUT", "/reconnect")])
@pytest.mark.parametrize(
    "channel_id", ["chan_ABC", "chan_", "chan_" + "a" * 65, "channel_1", "chan_a-b"]
)
async def test_malformed_channel_id_is_a_400(
    api: httpx.AsyncClient, base: str, method: str, suffix: str, channel_id: str
) -> None:
    response = await api.request(method, f"{subs(base)}/{channel_id}{suffix}")

    assert_problem(response, 400, "channel_id")


# -- GET /realtime-subscriptions ----------------------------------------------------------


async def test_list_is_newest_first_with_default_pagination(api: httpx.AsyncClient) -> None:
    created = [(await create_org_channel(api))["channel_id"] for _ in range(3)]

    listing = await list_channels(api)

    assert [item["channel_id"] for item in listing["data"]] == created[::-1]
    assert listing["pagination"] == {"page": 1, "limit": 20, "total": 3}


async def test_list_pages(api: httpx.AsyncClient) -> None:
    created = [(await create_user_channel(api))["channel_id"] for _ in range(5)]
    newest_first = created[::-1]

    second = await list_channels(api, limit=2, page=2)
    last = await list_channels(api, limit=2, page=3)
    beyond = await list_channels(api, limit=2, page=4)

    assert [item["channel_id"] for item in second["data"]] == newest_first[2:4]
    assert second["pagination"] == {"page": 2, "limit": 2, "total": 5}
    assert [item["channel_id"] for item in last["data"]] == newest_first[4:]
    assert beyond["data"] == [] and beyond["pagination"] == {"page": 4, "limit": 2, "total": 5}


async def test_list_items_have_the_contract_shape(api: httpx.AsyncClient) -> None:
    org = await create_org_channel(api, organisation_id="org_9", user_id="usr_c")
    user = await create_user_channel(api, user_id="usr_o", event_types=["comment_added"])

    items = {item["channel_id"]: item for item in (await list_channels(api))["data"]}

    assert set(items[org["channel_id"]]) == SUMMARY_KEYS
    assert set(items[user["channel_id"]]) == SUMMARY_KEYS - {"organisation_id"}
    assert items[org["channel_id"]] == {
        "channel_id": org["channel_id"],
        "subscription_type": "organisation_claims",
        "organisation_id": "org_9",
        "user_id": "usr_c",
        "event_types": ALL_TYPES,
        "status": "connected",
        "created_at": org["created_at"],
        "last_event_at": None,
        **NO_RECEIPTS,
    }
    assert items[user["channel_id"]]["event_types"] == ["comment_added"]
    assert items[user["channel_id"]]["created_at"] == user["created_at"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"organisation_id": "org_a"}, {"org_a/usr_1"}),
        ({"user_id": "usr_1"}, {"org_a/usr_1", "user/usr_1"}),
        ({"subscription_type": "user_claims"}, {"user/usr_1", "user/usr_2"}),
        ({"subscription_type": "organisation_claims"}, {"org_a/usr_1", "org_b/usr_2"}),
        ({"organisation_id": "org_b", "user_id": "usr_1"}, set()),
        ({"status": "connected"}, {"org_a/usr_1", "org_b/usr_2", "user/usr_1", "user/usr_2"}),
        ({"status": "disconnected"}, set()),
    ],
)
async def test_list_filters(
    api: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    names = {}
    for org, user in [("org_a", "usr_1"), ("org_b", "usr_2")]:
        channel = await create_org_channel(api, organisation_id=org, user_id=user)
        names[channel["channel_id"]] = f"{org}/{user}"
    for user in ["usr_1", "usr_2"]:
        names[(await create_user_channel(api, user_id=user))["channel_id"]] = f"user/{user}"

    listing = await list_channels(api, **params)

    assert {names[item["channel_id"]] for item in listing["data"]} == expected
    assert listing["pagination"]["total"] == len(expected)


async def test_closed_channels_are_listed_only_with_status_closed(
    api: httpx.AsyncClient,
) -> None:
    kept = await create_org_channel(api)
    closed = await create_org_channel(api)
    deleted = await delete_channel(api, closed["channel_id"])

    default = await list_channels(api)
    only_closed = await list_channels(api, status="closed")

    assert [item["channel_id"] for item in default["data"]] == [kept["channel_id"]]
    assert default["pagination"]["total"] == 1
    assert [item["channel_id"] for item in only_closed["data"]] == [closed["channel_id"]]
    assert only_closed["pagination"]["total"] == 1
    item = only_closed["data"][0]
    assert item["status"] == "closed"
    assert set(item) == SUMMARY_KEYS | {"closed_at"}
    assert item["closed_at"] == deleted["closed_at"]


async def test_list_last_event_at_is_set_once_an_event_is_recorded(
    api: httpx.AsyncClient,
) -> None:
    channel = await create_org_channel(api)
    assert (await list_channels(api))["data"][0]["last_event_at"] is None

    await publish(api)

    item = (await list_channels(api))["data"][0]
    assert item["last_event_at"] is not None, "last_event_at stays null after an event"
    assert parse_time(item["last_event_at"]) >= parse_time(channel["created_at"])
    assert_recent(item["last_event_at"])


# -- GET /realtime-subscriptions/{channel_id} --------------------------------------------


@base_paths
async def test_get_channel_detail(api: httpx.AsyncClient, base: str) -> None:
    created = await create_org_channel(api, base)

    detail = await get_channel(api, created["channel_id"], base)

    assert detail == {
        "channel_id": created["channel_id"],
        "subscription_type": "organisation_claims",
        "organisation_id": "org_001",
        "user_id": "usr_coord99",
        "event_types": ALL_TYPES,
        "status": "connected",
        "event_count": 0,
        "websocket_url": created["websocket_url"],
        "created_at": created["created_at"],
        "last_event_at": None,
        **NO_RECEIPTS,
    }


async def test_get_user_channel_detail_has_no_organisation_id(api: httpx.AsyncClient) -> None:
    created = await create_user_channel(api)

    detail = await get_channel(api, created["channel_id"])

    assert "organisation_id" not in detail
    assert detail["subscription_type"] == "user_claims"
    assert "channel_token" not in detail, "the token is shown only at creation"


async def test_get_counts_routed_events(api: httpx.AsyncClient) -> None:
    created = await create_org_channel(api)

    await publish(api)
    await publish(api, organisation_id="org_other")  # not routed to this channel

    detail = await get_channel(api, created["channel_id"])
    assert detail["event_count"] == 1
    assert detail["last_event_at"] is not None
    assert_recent(detail["last_event_at"])


@base_paths
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("PUT", "/reconnect"), ("DELETE", "")])
async def test_unknown_channel_is_a_404(
    api: httpx.AsyncClient, base: str, method: str, suffix: str
) -> None:
    response = await api.request(method, f"{subs(base)}/chan_doesnotexist0000000{suffix}")

    assert_problem(response, 404)


@base_paths
async def test_get_closed_channel_is_a_410_with_closed_at(
    api: httpx.AsyncClient, base: str
) -> None:
    created = await create_org_channel(api)
    deleted = await delete_channel(api, created["channel_id"])

    response = await api.get(f"{subs(base)}/{created['channel_id']}")

    body = assert_problem(response, 410)
    assert body["closed_at"] == deleted["closed_at"]
    assert deleted["closed_at"] in body["detail"], body["detail"]


# -- PUT /realtime-subscriptions/{channel_id}/reconnect ----------------------------------


@base_paths
async def test_reconnect_fresh_channel(api: httpx.AsyncClient, base: str) -> None:
    created = await create_org_channel(api)

    response = await api.put(f"{subs(base)}/{created['channel_id']}/reconnect")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"channel_id", "status", "reconnected_at", "missed_events"}
    assert body["channel_id"] == created["channel_id"]
    assert body["status"] == "connected"
    assert_recent(body["reconnected_at"])
    assert body["missed_events"] == 0


async def test_reconnect_counts_events_recorded_since_creation(api: httpx.AsyncClient) -> None:
    created = await create_user_channel(api, user_id="usr_owner")
    await publish(api, user_id="usr_owner")
    await publish(api, user_id="usr_owner", event_type="comment_added")
    await publish(api, user_id="usr_someone_else")

    response = await api.put(f"{subs(CANONICAL_BASE)}/{created['channel_id']}/reconnect")

    assert response.status_code == 200, response.text
    assert response.json()["missed_events"] == 2
    again = await api.put(f"{subs(CANONICAL_BASE)}/{created['channel_id']}/reconnect")
    assert again.json()["missed_events"] == 2, "no socket attached: nothing was delivered"


@base_paths
async def test_reconnect_closed_channel_is_a_410(api: httpx.AsyncClient, base: str) -> None:
    created = await create_org_channel(api)
    deleted = await delete_channel(api, created["channel_id"])

    response = await api.put(f"{subs(base)}/{created['channel_id']}/reconnect")

    body = assert_problem(response, 410)
    assert body["closed_at"] == deleted["closed_at"]


# -- DELETE /realtime-subscriptions/{channel_id} -----------------------------------------


@base_paths
async def test_delete_closes_the_channel(api: httpx.AsyncClient, base: str) -> None:
    created = await create_org_channel(api)

    response = await api.delete(f"{subs(base)}/{created['channel_id']}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"channel_id", "unsubscribed", "closed_at"}
    assert body["channel_id"] == created["channel_id"]
    assert body["unsubscribed"] is True
    assert_recent(body["closed_at"])
    assert parse_time(body["closed_at"]) >= parse_time(created["created_at"])


@base_paths
async def test_repeated_delete_keeps_the_first_closed_at(api: httpx.AsyncClient, base: str) -> None:
    created = await create_org_channel(api)
    first = await delete_channel(api, created["channel_id"], base)

    second = await delete_channel(api, created["channel_id"], base)

    assert second == first


# -- both mount points --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("create_base", "use_base"),
    [(CANONICAL_BASE, CONTRACT_BASE), (CONTRACT_BASE, CANONICAL_BASE)],
    ids=["canonical-then-contract", "contract-then-canonical"],
)
async def test_both_mount_points_serve_the_same_channels(
    api: httpx.AsyncClient, create_base: str, use_base: str
) -> None:
    created = await create_org_channel(api, create_base)
    channel_id = created["channel_id"]

    assert await get_channel(api, channel_id, use_base) == await get_channel(api, channel_id)
    reconnected = await api.put(f"{subs(use_base)}/{channel_id}/reconnect")
    assert reconnected.status_code == 200, reconnected.text
    assert reconnected.json()["channel_id"] == channel_id
    deleted = await delete_channel(api, channel_id, use_base)
    assert await delete_channel(api, channel_id, create_base) == deleted
    gone = await api.get(f"{subs(create_base)}/{channel_id}")
    assert assert_problem(gone, 410)["closed_at"] == deleted["closed_at"]


@pytest.mark.parametrize("params", [{}, {"status": "closed"}, {"limit": 1, "page": 2}])
async def test_list_is_identical_under_both_mount_points(
    api: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    await create_org_channel(api, CANONICAL_BASE)
    await create_user_channel(api, CONTRACT_BASE)
    closed = await create_user_channel(api, CONTRACT_BASE, user_id=unique("usr"))
    await delete_channel(api, closed["channel_id"])

    canonical = await list_channels(api, CANONICAL_BASE, **params)
    contract = await list_channels(api, CONTRACT_BASE, **params)

    assert canonical == contract
    assert canonical["data"], "the listing should not be empty"


# -- undeclared methods, documents --------------------------------------------------------


@base_paths
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/chan_abc123", {"DELETE", "GET"}),
        ("POST", "/chan_abc123", {"DELETE", "GET"}),
        ("GET", "/organisation", {"POST"}),
        ("DELETE", "/user", {"POST"}),
        ("GET", "/chan_abc123/reconnect", {"PUT"}),
        ("DELETE", "", {"GET"}),
    ],
)
async def test_undeclared_method_is_a_405_with_exact_allow(
    api: httpx.AsyncClient, base: str, method: str, path: str, allowed: set[str]
) -> None:
    response = await api.request(method, f"{subs(base)}{path}")

    assert_problem(response, 405)
    allow = {part.strip() for part in response.headers.get("allow", "").split(",") if part}
    assert allow == allowed, response.headers.get("allow")


@base_paths
async def test_openapi_document_is_served(api: httpx.AsyncClient, base: str) -> None:
    response = await api.get(f"{base}/openapi.json")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.0")
    assert "/realtime-subscriptions/{channel_id}" in document["paths"]


@base_paths
async def test_swagger_ui_is_served(api: httpx.AsyncClient, base: str) -> None:
    response = await api.get(f"{base}/ui/")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()
