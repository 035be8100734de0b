"""Ids match their pattern as a whole string, wherever they come in.

The document's patterns are ECMA-262, where a closing `$` is the end of the string; Python's
`re.search` also lets `$` match before a final newline, so `"usr_y\\n"` passed
`^[A-Za-z0-9][A-Za-z0-9_.:-]*$` and created a channel for another user than `usr_y`. Every
id of a body, a path or a query, with a trailing `\\n`, a trailing `\\r\\n` or a leading
space, is a 400 problem naming the field, and nothing is stored; the plain value is accepted.
A bearer token's `sub` so spoiled is a 401 (the token is refused; tests/unit/test_auth.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from claims_realtime.logs import RequestId
from claims_realtime.patterns import ecma_pattern, ecma_regex
from claims_realtime.realtime.protocol import channel_id_of
from tests.helpers import PUBLISHER_KEY, assert_problem
from tests.tokens import bearer, make_token

SUBSCRIPTIONS = "/api/v1/realtime-subscriptions"
EVENTS = "/api/v1/claim-events"
BATCH = "/api/v1/claim-events/batch"
USER = f"{SUBSCRIPTIONS}/user"
AUTH = {"X-Publisher-Key": PUBLISHER_KEY}

#: How a valid id is spoiled: a trailing LF, a trailing CRLF, a leading space.
SPOILERS = {
    "lf": lambda value: value + "\n",
    "crlf": lambda value: value + "\r\n",
    "leading-space": lambda value: " " + value,
}
spoilers = pytest.mark.parametrize("spoil", list(SPOILERS.values()), ids=list(SPOILERS))


def claim_event(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "evt_ids_1",
        "event_type": "status_changed",
        "claim_id": "clm_7781",
        "organisation_id": "org_001",
        "user_id": "usr_owner",
        "actor_id": "usr_coord99",
        **overrides,
    }


async def channels(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await api.get(SUBSCRIPTIONS, params={"limit": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def create(api: httpx.AsyncClient, kind: str, body: dict[str, Any]) -> str:
    response = await api.post(f"{SUBSCRIPTIONS}/{kind}", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["channel_id"])


async def event_counts(api: httpx.AsyncClient, *channel_ids: str) -> list[int]:
    counts = []
    for channel_id in channel_ids:
        response = await api.get(f"{SUBSCRIPTIONS}/{channel_id}")
        assert response.status_code == 200, response.text
        counts.append(int(response.json()["event_count"]))
    return counts


async def routed_channels(api: httpx.AsyncClient) -> tuple[str, str]:
    """An organisation channel of org_001 and a user channel of usr_owner: every event of
    claim_event() (or one with any single id spoiled) would be recorded on one of them."""
    org = await create(api, "organisation", {"organisation_id": "org_001", "user_id": "usr_c1"})
    user = await create(api, "user", {"user_id": "usr_owner"})
    return org, user


# -- subscription bodies ----------------------------------------------------------------------

SUBSCRIPTION_FIELDS = [
    ("user", {"user_id": "usr_y"}, "user_id"),
    ("organisation", {"organisation_id": "org_y", "user_id": "usr_y"}, "organisation_id"),
    ("organisation", {"organisation_id": "org_y", "user_id": "usr_y"}, "user_id"),
]
SUBSCRIPTION_IDS = [f"{kind}.{field}" for kind, _, field in SUBSCRIPTION_FIELDS]


@spoilers
@pytest.mark.parametrize(("kind", "body", "field"), SUBSCRIPTION_FIELDS, ids=SUBSCRIPTION_IDS)
async def test_spoiled_id_in_a_subscription_is_a_400_and_creates_nothing(
    api: httpx.AsyncClient, kind: str, body: dict[str, Any], field: str, spoil: Any
) -> None:
    response = await api.post(f"{SUBSCRIPTIONS}/{kind}", json={**body, field: spoil(body[field])})

    assert_problem(response, 400, field)
    assert await channels(api) == []


@pytest.mark.parametrize(("kind", "body", "field"), SUBSCRIPTION_FIELDS, ids=SUBSCRIPTION_IDS)
async def test_plain_id_in_a_subscription_is_accepted(
    api: httpx.AsyncClient, kind: str, body: dict[str, Any], field: str
) -> None:
    await create(api, kind, body)

    (listed,) = await channels(api)
    assert listed[field] == body[field]


# -- event bodies ------------------------------------------------------------------------------

EVENT_FIELDS = ["event_id", "claim_id", "organisation_id", "user_id", "actor_id"]


@spoilers
@pytest.mark.parametrize("field", EVENT_FIELDS)
async def test_spoiled_id_in_an_event_is_a_400_and_records_nothing(
    api: httpx.AsyncClient, field: str, spoil: Any
) -> None:
    org, user = await routed_channels(api)
    event = claim_event()

    response = await api.post(EVENTS, json={**event, field: spoil(event[field])}, headers=AUTH)

    assert_problem(response, 400, field)
    assert await event_counts(api, org, user) == [0, 0]


@spoilers
@pytest.mark.parametrize("field", EVENT_FIELDS)
async def test_spoiled_id_in_a_batch_is_a_400_and_records_nothing(
    api: httpx.AsyncClient, field: str, spoil: Any
) -> None:
    org, user = await routed_channels(api)
    good = claim_event(event_id="evt_ids_0")
    bad = claim_event()

    response = await api.post(
        BATCH, json={"events": [good, {**bad, field: spoil(bad[field])}]}, headers=AUTH
    )

    assert_problem(response, 400, f"events.1.{field}")
    assert await event_counts(api, org, user) == [0, 0]


async def test_plain_ids_in_events_are_accepted(api: httpx.AsyncClient) -> None:
    org, user = await routed_channels(api)

    single = await api.post(EVENTS, json=claim_event(), headers=AUTH)
    batch = await api.post(
        BATCH, json={"events": [claim_event(event_id="evt_ids_2")]}, headers=AUTH
    )

    assert single.status_code == 202, single.text
    assert single.json()["event_id"] == "evt_ids_1"
    assert batch.status_code == 202, batch.text
    assert await event_counts(api, org, user) == [2, 2]


# -- channel_id path parameter -----------------------------------------------------------------


@spoilers
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("PUT", "/reconnect")])
async def test_spoiled_channel_id_is_a_400_and_changes_nothing(
    api: httpx.AsyncClient, method: str, suffix: str, spoil: Any
) -> None:
    channel_id = await create(api, "user", {"user_id": "usr_y"})
    (before,) = await channels(api)

    spoiled = quote(spoil(channel_id), safe="")
    response = await api.request(method, f"{SUBSCRIPTIONS}/{spoiled}{suffix}")

    assert_problem(response, 400, "channel_id")
    assert await channels(api) == [before]  # not closed, not reconnected


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("PUT", "/reconnect"), ("DELETE", "")])
async def test_plain_channel_id_is_accepted(
    api: httpx.AsyncClient, method: str, suffix: str
) -> None:
    channel_id = await create(api, "user", {"user_id": "usr_y"})

    response = await api.request(method, f"{SUBSCRIPTIONS}/{channel_id}{suffix}")

    assert response.status_code == 200, response.text
    assert response.json()["channel_id"] == channel_id


# -- list query filters ------------------------------------------------------------------------

FILTERS = {"organisation_id": "org_y", "user_id": "usr_y"}


@spoilers
@pytest.mark.parametrize("field", ["organisation_id", "user_id"])
async def test_spoiled_list_filter_is_a_400(api: httpx.AsyncClient, field: str, spoil: Any) -> None:
    await create(api, "organisation", FILTERS)

    response = await api.get(SUBSCRIPTIONS, params={field: spoil(FILTERS[field])})

    assert_problem(response, 400, field)


@pytest.mark.parametrize("field", ["organisation_id", "user_id"])
async def test_plain_list_filter_is_accepted(api: httpx.AsyncClient, field: str) -> None:
    await create(api, "organisation", FILTERS)

    response = await api.get(SUBSCRIPTIONS, params={field: FILTERS[field]})

    assert response.status_code == 200, response.text
    assert response.json()["pagination"]["total"] == 1


# -- JWT sub (AUTH_MODE=jwt) -------------------------------------------------------------------


@spoilers
async def test_token_with_a_spoiled_sub_is_a_401_and_creates_nothing(
    jwt_api: httpx.AsyncClient, spoil: Any
) -> None:
    caller = bearer(make_token(spoil("usr_y")))

    response = await jwt_api.post(USER, json={"user_id": "usr_y"}, headers=caller)

    body = assert_problem(response, 401)
    assert "'sub'" in body["detail"]
    listed = await jwt_api.get(SUBSCRIPTIONS, headers=bearer(make_token("usr_y")))
    assert listed.json()["pagination"]["total"] == 0


async def test_token_with_a_plain_sub_is_accepted(jwt_api: httpx.AsyncClient) -> None:
    caller = bearer(make_token("usr_y"))

    response = await jwt_api.post(USER, json={"user_id": "usr_y"}, headers=caller)

    assert response.status_code == 201, response.text


# -- the pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ecma", "python"),
    [
        ("^[A-Za-z0-9][A-Za-z0-9_.:-]*$", r"^[A-Za-z0-9][A-Za-z0-9_.:-]*\Z"),
        ("^chan_[a-z0-9]{1,64}$", r"^chan_[a-z0-9]{1,64}\Z"),
        ("^(a$|b)$", r"^(a\Z|b)\Z"),
        (r"^[$]\$$", r"^[$]\$\Z"),  # a `$` in a class or escaped is a dollar sign
        (r"^a\\$", r"^a\\\Z"),  # an escaped backslash, then the end
        ("^wss?://", "^wss?://"),
    ],
)
def test_ecma_pattern_spells_the_end_of_input_as_python_does(ecma: str, python: str) -> None:
    assert ecma_pattern(ecma) == python


def test_ecma_regex_matches_whole_ids_only() -> None:
    regex = ecma_regex("^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    assert regex.search("usr_y")
    for spoiled in ("usr_y\n", "usr_y\r\n", " usr_y", "usr_y\n\n"):
        assert not regex.search(spoiled), spoiled


def test_socket_namespace_names_a_channel_only_as_a_whole() -> None:
    assert channel_id_of("/channels/chan_abc") == "chan_abc"
    for spoiled in ("/channels/chan_abc\n", "/channels/chan_abc\r\n", " /channels/chan_abc"):
        assert channel_id_of(spoiled) is None, spoiled


@pytest.mark.parametrize(
    ("incoming", "kept"), [(b"req-1", True), (b"req-1\n", False), (b" req-1", False)]
)
async def test_request_id_is_kept_only_when_sane_as_a_whole(incoming: bytes, kept: bool) -> None:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": [(b"x-request-id", incoming)]}
    await RequestId(app)(scope, None, send)

    (echoed,) = [value for name, value in sent[0]["headers"] if name == b"x-request-id"]
    assert (echoed == incoming) is kept
