"""A channel's fallback webhook through HTTP, under both mount points: set (PUT, or with the
channel), read, remove; the secret shown only when set; refused URLs as 400 problems naming
`fallback.url`; nothing created by a refused create; jwt mode's owner-only rule.

No WEBHOOK_ALLOWED_HOSTS here and no DNS needed: accepted URLs use a literal public address.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from claims_realtime.app import BASE_PATHS, CANONICAL_BASE
from tests.contract.test_auth_mode import COORDINATOR, OWNER
from tests.helpers import PUBLISHER_KEY, assert_problem, unique
from tests.tokens import bearer, make_token

base_paths = pytest.mark.parametrize("base", BASE_PATHS, ids=["canonical", "contract"])

URL = "https://93.184.215.14/claims/fallback"
STATE_KEYS = {
    "channel_id", "url", "after_seconds", "event_types", "status", "disabled_at", "pending",
    "sent", "failed", "last_status", "last_error", "last_attempt_at", "next_attempt_at",
    "recent_failures", "created_at", "updated_at",
}  # fmt: skip
CREATED_KEYS = {
    "channel_id", "subscription_type", "user_id", "event_types", "websocket_url",
    "channel_token", "status", "created_at",
}  # fmt: skip


def subs(base: str) -> str:
    return f"{base}/realtime-subscriptions"


async def new_channel(api: httpx.AsyncClient, base: str = CANONICAL_BASE, **body: Any) -> str:
    response = await api.post(f"{subs(base)}/user", json={"user_id": unique("usr"), **body})
    assert response.status_code == 201, response.text
    channel_id: str = response.json()["channel_id"]
    return channel_id


def assert_secret(secret: str) -> None:
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24


@base_paths
async def test_put_get_delete(api: httpx.AsyncClient, base: str) -> None:
    channel_id = await new_channel(api, base)
    url = f"{subs(base)}/{channel_id}/fallback"

    put = await api.put(url, json={"url": URL, "after_seconds": 900})
    assert put.status_code == 200, put.text
    made = put.json()
    assert set(made) == STATE_KEYS | {"secret"}
    assert_secret(made["secret"])
    assert made["channel_id"] == channel_id and made["url"] == URL
    assert made["after_seconds"] == 900 and made["status"] == "active"
    assert made["event_types"] == [
        "status_changed", "claim_submitted", "claim_approved", "claim_rejected", "comment_added"
    ]  # fmt: skip
    assert (made["pending"], made["sent"], made["failed"], made["recent_failures"]) == (0, 0, 0, [])

    got = await api.get(url)
    assert got.status_code == 200, got.text
    assert set(got.json()) == STATE_KEYS  # never the secret again
    assert made["secret"] not in got.text
    assert {k: v for k, v in made.items() if k != "secret"} == got.json()

    assert (await api.delete(url)).status_code == 204
    assert_problem(await api.get(url), 404, field="fallback")
    assert_problem(await api.delete(url), 404, field="fallback")


async def test_put_again_replaces_and_rotates_the_secret(api: httpx.AsyncClient) -> None:
    channel_id = await new_channel(api)
    url = f"{subs(CANONICAL_BASE)}/{channel_id}/fallback"
    first = (await api.put(url, json={"url": URL, "after_seconds": 60})).json()
    replaced = await api.put(
        url, json={"url": URL + "/v2", "after_seconds": 120, "event_types": ["comment_added"]}
    )
    assert replaced.status_code == 200, replaced.text
    second = replaced.json()
    assert second["secret"] != first["secret"]
    assert second["created_at"] == first["created_at"]
    got = (await api.get(url)).json()
    assert (got["url"], got["after_seconds"], got["event_types"]) == (
        URL + "/v2", 120, ["comment_added"]
    )  # fmt: skip


@base_paths
async def test_events_recorded_before_the_fallback_are_not_owed(
    api: httpx.AsyncClient, base: str
) -> None:
    user_id = unique("usr")
    created = await api.post(f"{subs(base)}/user", json={"user_id": user_id})
    url = f"{subs(base)}/{created.json()['channel_id']}/fallback"
    event = {"event_type": "comment_added", "claim_id": "clm_1", "organisation_id": "org_1",
             "user_id": user_id}  # fmt: skip
    headers = {"X-Publisher-Key": PUBLISHER_KEY}
    assert (await api.post(f"{base}/claim-events", json=event, headers=headers)).status_code == 202
    assert (await api.put(url, json={"url": URL, "after_seconds": 60})).json()["pending"] == 0
    assert (await api.post(f"{base}/claim-events", json=event, headers=headers)).status_code == 202
    assert (await api.get(url)).json()["pending"] == 1


@base_paths
@pytest.mark.parametrize(
    "refused",
    [
        "http://example.com/hook",
        "https://127.0.0.1/x",
        "https://localhost/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/x",
        "https://user:pw@93.184.215.14/x",
        "https://93.184.215.14/x#frag",
        "https://93.184.215.14:70000/x",
        "https://a..b/x",
        "https://\u00fc\u00f1\u00ee.invalid/x",
        "https://[fe80::1%25eth0]/x",
    ],
)
async def test_a_refused_url_is_a_400_naming_fallback_url(
    api: httpx.AsyncClient, base: str, refused: str
) -> None:
    channel_id = await new_channel(api, base)
    url = f"{subs(base)}/{channel_id}/fallback"
    response = await api.put(url, json={"url": refused, "after_seconds": 60})
    assert_problem(response, 400, field="fallback.url")
    assert_problem(await api.get(url), 404, field="fallback")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": URL, "after_seconds": 9}, "after_seconds"),
        ({"url": URL, "after_seconds": 604801}, "after_seconds"),
        ({"url": URL, "after_seconds": 10**30}, "after_seconds"),
        ({"url": URL, "after_seconds": "60"}, "after_seconds"),
        ({"url": URL, "after_seconds": 60, "event_types": []}, "event_types"),
        ({"url": URL, "after_seconds": 60, "event_types": ["comment_added"] * 2}, "event_types"),
        ({"url": URL, "after_seconds": 60, "event_types": ["nope"]}, "event_types.0"),
        ({"url": "ftp://x/", "after_seconds": 60}, "url"),
        ({"after_seconds": 60}, "url"),
        ({"url": URL, "after_seconds": 60, "secret": "whsec_mine"}, "secret"),
    ],
)
async def test_schema_refusals_are_400s(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    channel_id = await new_channel(api)
    response = await api.put(f"{subs(CANONICAL_BASE)}/{channel_id}/fallback", json=body)
    assert_problem(response, 400)
    assert response.json()["field"] == field


async def test_event_types_outside_the_channels_are_a_400(api: httpx.AsyncClient) -> None:
    channel_id = await new_channel(api, event_types=["status_changed"])
    response = await api.put(
        f"{subs(CANONICAL_BASE)}/{channel_id}/fallback",
        json={"url": URL, "after_seconds": 60, "event_types": ["comment_added"]},
    )
    assert_problem(response, 400, field="fallback.event_types")


@base_paths
async def test_unknown_and_closed_channels(api: httpx.AsyncClient, base: str) -> None:
    body = {"url": URL, "after_seconds": 60}
    unknown = f"{subs(base)}/chan_nosuchchannel/fallback"
    for response in (
        await api.put(unknown, json=body),
        await api.get(unknown),
        await api.delete(unknown),
    ):
        assert_problem(response, 404)
        assert "field" not in response.json()  # no channel, not no fallback

    channel_id = await new_channel(api, base)
    url = f"{subs(base)}/{channel_id}/fallback"
    assert (await api.put(url, json=body)).status_code == 200
    assert (await api.delete(f"{subs(base)}/{channel_id}")).status_code == 200
    for response in (await api.put(url, json=body), await api.get(url), await api.delete(url)):
        problem = assert_problem(response, 410)
        assert "closed_at" in problem


@base_paths
@pytest.mark.parametrize("kind", ["organisation", "user"])
async def test_created_with_a_fallback(api: httpx.AsyncClient, base: str, kind: str) -> None:
    body: dict[str, Any] = {"user_id": unique("usr"), "event_types": ["claim_approved"]}
    if kind == "organisation":
        body["organisation_id"] = "org_001"
    body["fallback"] = {"url": URL, "after_seconds": 3600}
    response = await api.post(f"{subs(base)}/{kind}", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    fallback = created.pop("fallback")
    assert set(fallback) == STATE_KEYS | {"secret"}
    assert_secret(fallback["secret"])
    assert fallback["channel_id"] == created["channel_id"]
    assert fallback["event_types"] == ["claim_approved"]  # the channel's, by default
    assert created["channel_token"] != fallback["secret"]

    got = await api.get(f"{subs(base)}/{created['channel_id']}/fallback")
    assert got.status_code == 200 and "secret" not in got.json()


@base_paths
async def test_created_without_a_fallback_is_unchanged(api: httpx.AsyncClient, base: str) -> None:
    response = await api.post(f"{subs(base)}/user", json={"user_id": unique("usr")})
    assert response.status_code == 201
    assert set(response.json()) == CREATED_KEYS
    channel_id = response.json()["channel_id"]
    assert_problem(await api.get(f"{subs(base)}/{channel_id}/fallback"), 404, field="fallback")


@base_paths
@pytest.mark.parametrize(
    "fallback",
    [
        {"url": "http://example.com/", "after_seconds": 60},
        {"url": "https://127.0.0.1/x", "after_seconds": 60},
        {"url": "https://localhost/x", "after_seconds": 60},
    ],
)
async def test_a_refused_fallback_creates_no_channel(
    api: httpx.AsyncClient, base: str, fallback: dict[str, Any]
) -> None:
    user_id = unique("usr")
    response = await api.post(f"{subs(base)}/user", json={"user_id": user_id, "fallback": fallback})
    assert_problem(response, 400, field="fallback.url")
    listed = await api.get(subs(base), params={"user_id": user_id})
    assert listed.json()["pagination"]["total"] == 0


async def test_a_fallback_outside_the_new_channels_types_creates_nothing(
    api: httpx.AsyncClient,
) -> None:
    user_id = unique("usr")
    body = {
        "user_id": user_id,
        "event_types": ["claim_approved"],
        "fallback": {"url": URL, "after_seconds": 60, "event_types": ["claim_rejected"]},
    }
    response = await api.post(f"{subs(CANONICAL_BASE)}/user", json=body)
    assert_problem(response, 400, field="fallback.event_types")
    listed = await api.get(subs(CANONICAL_BASE), params={"user_id": user_id})
    assert listed.json()["pagination"]["total"] == 0


# -- AUTH_MODE=jwt: the channel owner's only --------------------------------------------------


async def test_jwt_owner_only(jwt_api: httpx.AsyncClient) -> None:
    subs_url = subs(CANONICAL_BASE)
    created = await jwt_api.post(
        f"{subs_url}/user",
        json={"user_id": "usr_owner", "fallback": {"url": URL, "after_seconds": 60}},
        headers=OWNER,
    )
    assert created.status_code == 201, created.text
    url = f"{subs_url}/{created.json()['channel_id']}/fallback"
    body = {"url": URL, "after_seconds": 60}

    # Someone else: exactly as no channel at all.
    for method in ("PUT", "GET", "DELETE"):
        theirs = await jwt_api.request(method, url, json=body, headers=COORDINATOR)
        none = await jwt_api.request(
            method, f"{subs_url}/chan_nosuchchannel/fallback", json=body, headers=COORDINATOR
        )
        assert_problem(theirs, 404)
        assert_problem(none, 404)
        assert theirs.json()["title"] == none.json()["title"] and "field" not in theirs.json()
    assert_problem(await jwt_api.get(url), 401)

    assert (await jwt_api.put(url, json=body, headers=OWNER)).status_code == 200
    assert (await jwt_api.get(url, headers=OWNER)).status_code == 200
    assert (await jwt_api.delete(url, headers=OWNER)).status_code == 204


async def test_jwt_an_organisation_channels_fallback_needs_the_role_still(
    jwt_api: httpx.AsyncClient,
) -> None:
    created = await jwt_api.post(
        f"{subs(CANONICAL_BASE)}/organisation",
        json={"organisation_id": "org_001", "user_id": "usr_coord99"},
        headers=COORDINATOR,
    )
    url = f"{subs(CANONICAL_BASE)}/{created.json()['channel_id']}/fallback"
    demoted = bearer(make_token("usr_coord99", {"org_001": ["viewer"]}))
    body = {"url": URL, "after_seconds": 60}

    assert_problem(await jwt_api.put(url, json=body, headers=demoted), 403)
    assert (await jwt_api.put(url, json=body, headers=COORDINATOR)).status_code == 200
    assert (await jwt_api.get(url, headers=demoted)).status_code == 200
    assert (await jwt_api.delete(url, headers=demoted)).status_code == 204
