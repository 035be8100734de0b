"""Ingestion through HTTP: POST /api/v1/claim-events and /api/v1/claim-events/batch.

What the publisher sees (202 results, 401/400/409 problems naming the field) and what it
does to channels, observed through GET /realtime-subscriptions/{channel_id}
(`event_count`, `last_event_at`): routing, idempotency and batch atomicity.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.helpers import PUBLISHER_KEY, assert_problem

SUBSCRIPTIONS = "/api/v1/realtime-subscriptions"
EVENTS = "/api/v1/claim-events"
BATCH = "/api/v1/claim-events/batch"
AUTH = {"X-Publisher-Key": PUBLISHER_KEY}
MAX_DATA_BYTES = 16 * 1024


# -- helpers ------------------------------------------------------------------------------


def claim_event(**overrides: Any) -> dict[str, Any]:
    """A valid event of claim clm_7781 (organisation org_001, owner usr_owner)."""
    return {
        "event_type": "status_changed",
        "claim_id": "clm_7781",
        "organisation_id": "org_001",
        "user_id": "usr_owner",
        **overrides,
    }


def data_of_size(size: int) -> dict[str, str]:
    """A `data` object whose compact JSON is exactly `size` bytes (`{"x":"..."}`)."""
    return {"x": "a" * (size - len('{"x":""}'))}


async def create_org_channel(api: httpx.AsyncClient, **kw: Any) -> str:
    body = {"organisation_id": "org_001", "user_id": "usr_coord99", **kw}
    response = await api.post(f"{SUBSCRIPTIONS}/organisation", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["channel_id"])


async def create_user_channel(api: httpx.AsyncClient, **kw: Any) -> str:
    body = {"user_id": "usr_owner", **kw}
    response = await api.post(f"{SUBSCRIPTIONS}/user", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["channel_id"])


async def post_event(api: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await api.post(EVENTS, json=body, headers={**AUTH, **headers})


async def post_batch(api: httpx.AsyncClient, events: list[Any]) -> httpx.Response:
    return await api.post(BATCH, json={"events": events}, headers=AUTH)


async def publish(api: httpx.AsyncClient, **event: Any) -> dict[str, Any]:
    """Publish one event (claim_event() with overrides) and answer the 202 body."""
    response = await post_event(api, claim_event(**event))
    assert response.status_code == 202, response.text
    return response.json()


async def channel(api: httpx.AsyncClient, channel_id: str) -> dict[str, Any]:
    response = await api.get(f"{SUBSCRIPTIONS}/{channel_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def event_count(api: httpx.AsyncClient, channel_id: str) -> int:
    return int((await channel(api, channel_id))["event_count"])


# -- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Publisher-Key": "wrong-key"}, {"X-Publisher-Key": ""},
     {"X-Publisher-Key": PUBLISHER_KEY + "x"}],
    ids=["missing", "wrong", "empty", "longer"],
)  # fmt: skip
@pytest.mark.parametrize("path", [EVENTS, BATCH], ids=["single", "batch"])
async def test_publisher_key_is_required(
    api: httpx.AsyncClient, headers: dict[str, str], path: str
) -> None:
    channel_id = await create_org_channel(api)
    body = claim_event() if path == EVENTS else {"events": [claim_event()]}

    response = await api.post(path, json=body, headers=headers)

    assert_problem(response, 401)
    assert await event_count(api, channel_id) == 0, "a refused event must not be recorded"


# -- POST /claim-events: routing ----------------------------------------------------------


async def test_publish_answers_202_with_a_server_assigned_event_id(
    api: httpx.AsyncClient,
) -> None:
    response = await post_event(api, claim_event())

    assert response.status_code == 202, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"event_id", "channels", "duplicate"}
    assert body["event_id"].startswith("evt_"), body
    assert body["channels"] == 0, "no channel exists yet"
    assert body["duplicate"] is False


async def test_publish_keeps_the_given_event_id(api: httpx.AsyncClient) -> None:
    body = await publish(api, event_id="evt_20260326_0001")

    assert body == {"event_id": "evt_20260326_0001", "channels": 0, "duplicate": False}


async def test_event_is_routed_to_matching_open_channels_only(api: httpx.AsyncClient) -> None:
    org = await create_org_channel(api)
    owner = await create_user_channel(api, user_id="usr_owner")
    excluded_type = await create_org_channel(api, event_types=["comment_added"])
    other_org = await create_org_channel(api, organisation_id="org_other")
    other_user = await create_user_channel(api, user_id="usr_other")
    # An org channel of another organisation whose coordinator owns the claim.
    coordinator = await create_org_channel(api, organisation_id="org_x", user_id="usr_owner")
    closed = await create_org_channel(api)
    assert (await api.delete(f"{SUBSCRIPTIONS}/{closed}")).status_code == 200

    result = await publish(api)

    assert result["channels"] == 2, "routed to the org channel and the owner's channel only"
    assert await event_count(api, org) == 1
    assert await event_count(api, owner) == 1
    for unrouted in (excluded_type, other_org, other_user, coordinator):
        assert await event_count(api, unrouted) == 0, unrouted


async def test_channel_created_after_an_event_does_not_receive_it(
    api: httpx.AsyncClient,
) -> None:
    await publish(api)

    late = await create_org_channel(api)

    detail = await channel(api, late)
    assert detail["event_count"] == 0
    assert detail["last_event_at"] is None


async def test_publish_sets_last_event_at_on_routed_channels_only(
    api: httpx.AsyncClient,
) -> None:
    routed = await create_org_channel(api)
    unrouted = await create_org_channel(api, organisation_id="org_other")

    await publish(api)

    assert (await channel(api, routed))["last_event_at"] is not None
    assert (await channel(api, unrouted))["last_event_at"] is None


async def test_event_count_grows_with_each_routed_event(api: httpx.AsyncClient) -> None:
    channel_id = await create_user_channel(api, event_types=["status_changed", "comment_added"])

    for event_type in ["status_changed", "claim_approved", "comment_added", "status_changed"]:
        await publish(api, event_type=event_type)

    assert await event_count(api, channel_id) == 3


# -- idempotency --------------------------------------------------------------------------


async def test_resubmitted_event_is_a_duplicate_and_recorded_once(
    api: httpx.AsyncClient,
) -> None:
    channel_id = await create_org_channel(api)
    event = claim_event(event_id="evt_once", data={"from": "submitted", "to": "in_review"})

    first = await post_event(api, event)
    second = await post_event(api, event)

    assert first.status_code == 202 and second.status_code == 202, second.text
    assert first.json() == {"event_id": "evt_once", "channels": 1, "duplicate": False}
    assert second.json() == {"event_id": "evt_once", "channels": 1, "duplicate": True}
    assert await event_count(api, channel_id) == 1


async def test_duplicate_answers_the_original_channel_count(api: httpx.AsyncClient) -> None:
    first_channel = await create_org_channel(api)
    original = await publish(api, event_id="evt_retry")
    await create_org_channel(api)  # a channel that did not exist at the first submission
    assert (await api.delete(f"{SUBSCRIPTIONS}/{first_channel}")).status_code == 200

    retry = await publish(api, event_id="evt_retry")

    assert retry == {**original, "duplicate": True}


@pytest.mark.parametrize(
    "changed",
    [{"claim_id": "clm_other"}, {"event_type": "comment_added"}, {"data": {"x": 1}},
     {"actor_id": "usr_someone"}],
    ids=["claim_id", "event_type", "data", "actor_id"],
)  # fmt: skip
async def test_reused_event_id_for_other_content_is_a_409(
    api: httpx.AsyncClient, changed: dict[str, Any]
) -> None:
    channel_id = await create_org_channel(api)
    await publish(api, event_id="evt_taken")

    response = await post_event(api, claim_event(event_id="evt_taken", **changed))

    assert_problem(response, 409, "event_id")
    assert await event_count(api, channel_id) == 1


# -- validation ---------------------------------------------------------------------------


INVALID_EVENTS = [
    pytest.param(claim_event(event_type="claim_archived"), "event_type", id="bad-event-type"),
    pytest.param({k: v for k, v in claim_event().items() if k != "claim_id"}, "claim_id",
                 id="missing-claim-id"),
    pytest.param({k: v for k, v in claim_event().items() if k != "user_id"}, "user_id",
                 id="missing-user-id"),
    pytest.param(claim_event(priority="high"), "priority", id="unknown-property"),
    pytest.param(claim_event(occurred_at="yesterday"), "occurred_at", id="occurred-at-text"),
    pytest.param(claim_event(occurred_at="2026-03-26T08:14:22"), "occurred_at",
                 id="occurred-at-without-offset"),
    pytest.param(claim_event(occurred_at="0001-01-01T00:00:00+03:04"), "occurred_at",
                 id="occurred-at-before-year-1-in-utc"),
    pytest.param(claim_event(occurred_at="2026-13-45T08:14:22Z"), "occurred_at",
                 id="occurred-at-impossible-date"),
    pytest.param(claim_event(organisation_id="org 1"), "organisation_id", id="bad-org-id"),
    pytest.param(claim_event(event_id=""), "event_id", id="empty-event-id"),
    pytest.param(claim_event(event_id="e" * 129), "event_id", id="too-long-event-id"),
    pytest.param(claim_event(data=[1, 2]), "data", id="data-not-an-object"),
    pytest.param(claim_event(data=data_of_size(MAX_DATA_BYTES + 1)), "data",
                 id="data-too-large"),
    pytest.param(claim_event(data={"x": "a" * 20 * 1024}), "data", id="data-20-kib"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "field"), INVALID_EVENTS)
async def test_invalid_event_is_a_400_naming_the_field(
    api: httpx.AsyncClient, event: dict[str, Any], field: str
) -> None:
    channel_id = await create_org_channel(api)

    response = await post_event(api, event)

    assert_problem(response, 400, field)
    assert await event_count(api, channel_id) == 0


async def test_data_of_exactly_16_kib_is_accepted(api: httpx.AsyncClient) -> None:
    channel_id = await create_org_channel(api)

    response = await post_event(api, claim_event(data=data_of_size(MAX_DATA_BYTES)))

    assert response.status_code == 202, response.text[:500]
    assert await event_count(api, channel_id) == 1


async def test_occurred_at_with_an_offset_is_accepted(api: httpx.AsyncClient) -> None:
    channel_id = await create_org_channel(api)

    await publish(api, occurred_at="2026-03-26T10:14:22.5+02:00")

    assert await event_count(api, channel_id) == 1


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        pytest.param(b"{not json", "application/json", 400, id="not-json"),
        pytest.param(b"\xff\xfe", "application/json", 400, id="not-utf8"),
        pytest.param(b'{"event_type": "status_changed"}', "text/plain", 415, id="text-plain"),
    ],
)
async def test_unreadable_body_is_refused(
    api: httpx.AsyncClient, content: bytes, content_type: str, status: int
) -> None:
    response = await api.post(
        EVENTS, content=content, headers={**AUTH, "Content-Type": content_type}
    )

    assert_problem(response, status, "body" if status == 400 else None)


@pytest.mark.parametrize("path", [EVENTS, BATCH], ids=["single", "batch"])
async def test_json_body_without_content_type_is_a_415_naming_the_header(
    api: httpx.AsyncClient, path: str
) -> None:
    # httpx sends no Content-Type for raw `content`.
    body = claim_event() if path == EVENTS else {"events": [claim_event()]}

    response = await api.post(path, content=json.dumps(body).encode(), headers=AUTH)

    assert_problem(response, 415, "Content-Type")


async def test_deeply_nested_data_is_a_400(api: httpx.AsyncClient) -> None:
    # 5000 nested arrays: 10 000 bytes, within the 16 KiB limit, but beyond any parser.
    nested = "[" * 5000 + "]" * 5000
    content = json.dumps(claim_event())[:-1] + ', "data": {"x": ' + nested + "}}"

    response = await api.post(
        EVENTS, content=content.encode(), headers={**AUTH, "Content-Type": "application/json"}
    )

    assert_problem(response, 400, "body")


@pytest.mark.parametrize(
    "data_json",
    [
        pytest.param('{"x": NaN}', id="NaN"),
        pytest.param('{"x": -Infinity}', id="infinity"),
        pytest.param('{"x": 1e400}', id="overflowing-number"),
    ],
)
async def test_numbers_json_cannot_carry_are_a_400(api: httpx.AsyncClient, data_json: str) -> None:
    # Python's parser accepts them; JavaScript clients could not parse them back.
    content = json.dumps(claim_event())[:-1] + f', "data": {data_json}}}'

    response = await api.post(
        EVENTS, content=content.encode(), headers={**AUTH, "Content-Type": "application/json"}
    )

    assert_problem(response, 400, "body")


@pytest.mark.parametrize(
    "data_json",
    [
        pytest.param('{"x": "a\\u0000b"}', id="NUL"),
        pytest.param('{"x": "\\udb65"}', id="lone-surrogate"),
        pytest.param('{"\\u0000": 1}', id="NUL-in-key"),
    ],
)
async def test_any_json_string_is_accepted_in_data(api: httpx.AsyncClient, data_json: str) -> None:
    # Valid JSON, though PostgreSQL's jsonb would refuse it: data is stored as JSON text.
    content = json.dumps(claim_event())[:-1] + f', "data": {data_json}}}'

    response = await api.post(
        EVENTS, content=content.encode(), headers={**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == 202, response.text


async def test_escaped_characters_that_are_valid_unicode_are_kept(api: httpx.AsyncClient) -> None:
    content = json.dumps(claim_event())[:-1] + ', "data": {"x": "\\ud83d\\ude00 \\u00e9"}}'

    response = await api.post(
        EVENTS, content=content.encode(), headers={**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == 202, response.text


async def test_concurrent_submissions_of_one_event_record_it_once(
    api: httpx.AsyncClient,
) -> None:
    channel_id = await create_org_channel(api)

    responses = await asyncio.gather(
        *(post_event(api, claim_event(event_id="evt_raced")) for _ in range(10))
    )

    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    duplicates = sorted(r.json()["duplicate"] for r in responses)
    assert duplicates == [False] + [True] * 9
    assert await event_count(api, channel_id) == 1


async def test_concurrent_events_each_get_a_place_on_the_channel(
    api: httpx.AsyncClient,
) -> None:
    channel_id = await create_org_channel(api)

    responses = await asyncio.gather(*(post_event(api, claim_event()) for _ in range(20)))

    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses]
    assert await event_count(api, channel_id) == 20


# -- POST /claim-events/batch -------------------------------------------------------------


async def test_batch_answers_one_result_per_event_in_order(api: httpx.AsyncClient) -> None:
    org = await create_org_channel(api)
    owner = await create_user_channel(api)
    events = [
        claim_event(event_id="evt_b1", event_type="claim_submitted"),
        claim_event(event_id="evt_b2", organisation_id="org_other", user_id="usr_other"),
        claim_event(event_type="comment_added", data={"comment": "Please attach the invoice."}),
    ]

    response = await post_batch(api, events)

    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["event_id"] for r in results[:2]] == ["evt_b1", "evt_b2"]
    assert results[2]["event_id"].startswith("evt_")
    assert [r["channels"] for r in results] == [2, 0, 2]
    assert [r["duplicate"] for r in results] == [False, False, False]
    assert await event_count(api, org) == 2
    assert await event_count(api, owner) == 2


async def test_batch_of_500_events_is_accepted(api: httpx.AsyncClient) -> None:
    channel_id = await create_org_channel(api)

    response = await post_batch(api, [claim_event() for _ in range(500)])

    assert response.status_code == 202, response.text[:500]
    results = response.json()["results"]
    assert len(results) == 500
    assert len({r["event_id"] for r in results}) == 500, "each event gets its own id"
    assert await event_count(api, channel_id) == 500


@pytest.mark.parametrize(
    ("events", "field"),
    [
        pytest.param([], "events", id="empty"),
        pytest.param([claim_event()] * 501, "events", id="501-events"),
        pytest.param([claim_event(), claim_event(event_type="claim_archived")],
                     "events.1.event_type", id="bad-event-type"),
        pytest.param([{k: v for k, v in claim_event().items() if k != "claim_id"}],
                     "events.0.claim_id", id="missing-claim-id"),
        pytest.param([claim_event(), claim_event(), claim_event(priority="high")],
                     "events.2.priority", id="unknown-property"),
        pytest.param([claim_event(), claim_event(occurred_at="soon")],
                     "events.1.occurred_at", id="bad-occurred-at"),
        pytest.param([claim_event(), claim_event(data=data_of_size(MAX_DATA_BYTES + 1))],
                     "events.1.data", id="data-too-large"),
    ],
)  # fmt: skip
async def test_invalid_batch_is_a_400_and_records_nothing(
    api: httpx.AsyncClient, events: list[dict[str, Any]], field: str
) -> None:
    channel_id = await create_org_channel(api)

    response = await post_batch(api, events)

    assert_problem(response, 400, field)
    assert await event_count(api, channel_id) == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"events": [claim_event()], "more": True}, {"events": claim_event()}],
    ids=["no-events", "unknown-property", "events-not-a-list"],
)
async def test_malformed_batch_envelope_is_a_400(
    api: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await api.post(BATCH, json=body, headers=AUTH)

    problem = assert_problem(response, 400)
    assert problem.get("field") in ("events", "more"), problem


async def test_batch_with_oversized_data_in_the_last_event_records_none(
    api: httpx.AsyncClient,
) -> None:
    channel_id = await create_org_channel(api)
    events = [
        claim_event(event_id="evt_ok_1"),
        claim_event(event_id="evt_ok_2"),
        claim_event(event_id="evt_big", data={"blob": "a" * 20 * 1024}),
    ]

    response = await post_batch(api, events)

    assert_problem(response, 400, "events.2.data")
    assert await event_count(api, channel_id) == 0
    # None of the batch was stored: the first event can now be published as new.
    assert (await publish(api, event_id="evt_ok_1"))["duplicate"] is False


async def test_batch_reusing_an_event_id_for_other_content_records_none(
    api: httpx.AsyncClient,
) -> None:
    channel_id = await create_org_channel(api)
    await publish(api, event_id="evt_existing")

    response = await post_batch(
        api,
        [
            claim_event(event_id="evt_new_1"),
            claim_event(event_id="evt_existing", claim_id="clm_other"),
            claim_event(event_id="evt_new_2"),
        ],
    )

    assert_problem(response, 409, "events.1.event_id")
    assert await event_count(api, channel_id) == 1, "the batch must be all or nothing"
    assert (await publish(api, event_id="evt_new_1"))["duplicate"] is False


async def test_batch_reusing_an_event_id_within_itself_for_other_content_is_a_409(
    api: httpx.AsyncClient,
) -> None:
    channel_id = await create_org_channel(api)

    response = await post_batch(
        api, [claim_event(event_id="evt_twice"), claim_event(event_id="evt_twice", claim_id="c2")]
    )

    assert_problem(response, 409, "events.1.event_id")
    assert await event_count(api, channel_id) == 0


async def test_batch_containing_the_same_new_event_twice(api: httpx.AsyncClient) -> None:
    channel_id = await create_org_channel(api)
    event = claim_event(event_id="evt_repeated")

    response = await post_batch(api, [event, event])

    assert response.status_code == 202, response.text
    assert response.json()["results"] == [
        {"event_id": "evt_repeated", "channels": 1, "duplicate": False},
        {"event_id": "evt_repeated", "channels": 1, "duplicate": True},
    ]
    assert await event_count(api, channel_id) == 1


async def test_batch_with_an_already_recorded_event_marks_it_duplicate(
    api: httpx.AsyncClient,
) -> None:
    channel_id = await create_org_channel(api)
    await publish(api, event_id="evt_before")

    response = await post_batch(
        api, [claim_event(event_id="evt_before"), claim_event(event_id="evt_after")]
    )

    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [(r["event_id"], r["duplicate"]) for r in results] == [
        ("evt_before", True),
        ("evt_after", False),
    ]
    assert await event_count(api, channel_id) == 2
