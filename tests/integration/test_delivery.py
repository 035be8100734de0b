"""Delivery end to end: a real server, real Python Socket.IO clients.

Routing, order, drop and resume (with and without `last_sequence`), events published during
a replay, history truncation, refusals, closing, idempotency, batch atomicity, status, and
persistence across a restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import socketio

from claims_realtime.realtime.client import ChannelClient, ChannelClosed, Recovery
from tests.helpers import PUBLISHER_KEY, unique
from tests.server import Server

WAIT = 10.0


def claim_event(org: str, user: str = "usr_owner", **overrides: Any) -> dict[str, Any]:
    return {
        "event_type": "status_changed",
        "claim_id": unique("clm"),
        "organisation_id": org,
        "user_id": user,
        **overrides,
    }


async def events(client: ChannelClient, count: int) -> list[dict[str, Any]]:
    """The next `count` events (recoveries are checked separately and skipped here)."""
    received: list[dict[str, Any]] = []
    while len(received) < count:
        message = await client.next(WAIT)
        if not isinstance(message, Recovery):
            received.append(message)
    return received


async def recovery(client: ChannelClient) -> Recovery:
    message = await client.next(WAIT)
    assert isinstance(message, Recovery), message
    return message


async def nothing_more(client: ChannelClient, within: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        extra = await client.next(within)
        pytest.fail(f"unexpected message {extra}")


async def channel_state(server: Server, channel_id: str) -> dict[str, Any]:
    async with server.client() as http:
        response = await http.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def eventually_status(server: Server, channel_id: str, status: str) -> None:
    deadline = time.monotonic() + WAIT
    while (await channel_state(server, channel_id))["status"] != status:
        assert time.monotonic() < deadline, f"{channel_id} never became {status}"
        await asyncio.sleep(0.05)


async def reconnect(server: Server, channel_id: str) -> dict[str, Any]:
    async with server.client() as http:
        response = await http.put(f"/api/v1/realtime-subscriptions/{channel_id}/reconnect")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_organisation_and_user_channels_receive_what_they_subscribed_to(server):
    org, owner = unique("org"), unique("usr")
    org_channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    approvals = await server.subscribe(
        "organisation", organisation_id=org, user_id="usr_c", event_types=["claim_approved"]
    )
    mine = await server.subscribe("user", user_id=owner)
    async with (
        ChannelClient(org_channel["websocket_url"], org_channel["channel_token"]) as all_of_org,
        ChannelClient(approvals["websocket_url"], approvals["channel_token"]) as approved_only,
        ChannelClient(mine["websocket_url"], mine["channel_token"]) as owner_client,
    ):
        for client in (all_of_org, approved_only, owner_client):
            await recovery(client)
        await server.publish(**claim_event(org, owner, event_type="claim_submitted"))
        await server.publish(**claim_event(org, "usr_someone_else", event_type="claim_approved"))
        await server.publish(**claim_event(unique("org"), owner, event_type="comment_added"))

        got = await events(all_of_org, 2)
        assert [(e["sequence"], e["event_type"]) for e in got] == [
            (1, "claim_submitted"),
            (2, "claim_approved"),
        ]
        assert [e["event_type"] for e in await events(approved_only, 1)] == ["claim_approved"]
        assert [(e["sequence"], e["event_type"]) for e in await events(owner_client, 2)] == [
            (1, "claim_submitted"),
            (2, "comment_added"),
        ]
        for client in (all_of_org, approved_only, owner_client):
            await nothing_more(client)


async def test_envelope_carries_the_event_as_published(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        await recovery(client)
        published = claim_event(
            org,
            event_id=unique("evt"),
            actor_id="usr_coord99",
            occurred_at="2026-03-26T10:14:22.5+02:00",
            data={"from": "submitted", "to": "in_review", "amount": 120.5},
        )
        await server.publish(**published)
        (envelope,) = await events(client, 1)
    assert envelope == {
        "channel_id": channel["channel_id"],
        "sequence": 1,
        "event_id": published["event_id"],
        "event_type": "status_changed",
        "claim_id": published["claim_id"],
        "organisation_id": org,
        "user_id": "usr_owner",
        "actor_id": "usr_coord99",
        "occurred_at": "2026-03-26T08:14:22.500Z",
        "data": {"from": "submitted", "to": "in_review", "amount": 120.5},
    }


async def test_data_arrives_exactly_as_published_even_odd_strings(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    data = {"nul": "a\x00b", "lone": "\udb65", "emoji": "\U0001f600", "\x00": [1.5, None]}
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        await recovery(client)
        async with server.client() as http:
            # json.dumps escapes all of them: the body is plain ASCII JSON.
            response = await http.post(
                "/api/v1/claim-events",
                content=json.dumps(claim_event(org, data=data)),
                headers={"X-Publisher-Key": PUBLISHER_KEY, "Content-Type": "application/json"},
            )
        assert response.status_code == 202, response.text
        (envelope,) = await events(client, 1)
    assert envelope["data"] == data


async def test_a_large_batch_arrives_complete_and_in_order(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        await recovery(client)
        response = await server.publish_batch([claim_event(org) for _ in range(500)])
        assert response.status_code == 202, response.text
        got = await events(client, 500)
    assert [e["sequence"] for e in got] == list(range(1, 501))


async def test_drop_then_resume_gets_exactly_the_missed_events_then_live_ones(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    channel_id = channel["channel_id"]
    client = ChannelClient(channel["websocket_url"], channel["channel_token"])
    await client.connect()
    await recovery(client)
    for _ in range(2):
        await server.publish(**claim_event(org))
    assert [e["sequence"] for e in await events(client, 2)] == [1, 2]
    await eventually_status(server, channel_id, "connected")
    await client.close()
    await eventually_status(server, channel_id, "disconnected")

    missed = [await server.publish(**claim_event(org)) for _ in range(3)]
    assert (await reconnect(server, channel_id))["missed_events"] == 3

    # No last_sequence: the server resumes after the last sequence the client confirmed.
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as again:
        resumed = await recovery(again)
        assert (resumed.resumed_from, resumed.head_sequence, resumed.replayed) == (2, 5, 3)
        assert resumed.recovered and resumed.unavailable == 0
        replayed = await events(again, 3)
        assert [e["sequence"] for e in replayed] == [3, 4, 5]
        assert [e["event_id"] for e in replayed] == [m["event_id"] for m in missed]
        await server.publish(**claim_event(org))
        assert [e["sequence"] for e in await events(again, 1)] == [6]
        await nothing_more(again)


async def test_an_explicit_last_sequence_wins_over_the_server_resume_point(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    for _ in range(4):
        await server.publish(**claim_event(org))
    async with ChannelClient(
        channel["websocket_url"], channel["channel_token"], last_sequence=1
    ) as client:
        resumed = await recovery(client)
        assert (resumed.resumed_from, resumed.replayed) == (1, 3)
        assert [e["sequence"] for e in await events(client, 3)] == [2, 3, 4]
        await nothing_more(client)


async def test_a_transport_drop_is_resumed_by_the_client_without_loss_or_repeats(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    async with ChannelClient(
        channel["websocket_url"], channel["channel_token"], reconnection_delay=0.1
    ) as client:
        await recovery(client)
        await server.publish(**claim_event(org))
        await events(client, 1)
        await client.drop()
        for _ in range(3):
            await server.publish(**claim_event(org))
        resumed = await recovery(client)
        assert resumed.resumed_from == 1
        rest = await events(client, 3)
    assert [e["sequence"] for e in rest] == [2, 3, 4]


async def test_events_published_during_a_replay_follow_it_without_gap_or_repeat(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    for _ in range(4):
        response = await server.publish_batch([claim_event(org) for _ in range(500)])
        assert response.status_code == 202

    async def publish_meanwhile() -> None:
        for _ in range(20):
            response = await server.publish_batch([claim_event(org) for _ in range(10)])
            assert response.status_code == 202

    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        publisher = asyncio.create_task(publish_meanwhile())
        first = await recovery(client)
        got = await events(client, 2200)
        await publisher
        await nothing_more(client)
    assert first.replayed >= 2000
    assert [e["sequence"] for e in got] == list(range(1, 2201))


async def test_history_truncation_is_reported_not_hidden(own_server):
    own_server.env["HISTORY_MAX_EVENTS"] = "5"
    own_server.start()
    org = unique("org")
    channel = await own_server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    response = await own_server.publish_batch([claim_event(org) for _ in range(8)])
    assert response.status_code == 202
    async with ChannelClient(
        channel["websocket_url"], channel["channel_token"], last_sequence=1
    ) as client:
        resumed = await recovery(client)
        assert not resumed.recovered
        assert (resumed.resumed_from, resumed.first_available_sequence) == (1, 4)
        assert (resumed.unavailable, resumed.replayed, resumed.head_sequence) == (2, 5, 8)
        assert [e["sequence"] for e in await events(client, 5)] == [4, 5, 6, 7, 8]
    async with ChannelClient(
        channel["websocket_url"], channel["channel_token"], last_sequence=3
    ) as client:
        resumed = await recovery(client)
        assert resumed.recovered and resumed.unavailable == 0 and resumed.replayed == 5


async def test_connections_without_the_right_token_are_refused_with_a_reason(server):
    channel = await server.subscribe("user", user_id=unique("usr"))
    origin, namespace = channel["websocket_url"].replace("ws://", "http://").split("/channels/")
    for auth, code in [
        ({"token": "not-the-token"}, "invalid_token"),
        (None, "token_required"),
        ({"token": channel["channel_token"], "last_sequence": -1}, "invalid_last_sequence"),
        ({"token": channel["channel_token"], "last_sequence": 7}, "last_sequence_ahead"),
    ]:
        errors: list[Any] = []
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("connect_error", errors.append, namespace=f"/channels/{namespace}")
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(
                origin, namespaces=[f"/channels/{namespace}"], auth=auth, wait_timeout=5
            )
        await sio.disconnect()
        assert errors and errors[0]["data"]["code"] == code, (auth, errors)
        assert errors[0]["message"]

    unknown = channel["websocket_url"].rsplit("/", 1)[0] + "/chan_doesnotexist"
    with pytest.raises(ChannelClosed, match="channel_not_found"):
        await ChannelClient(unknown, "whatever").connect()


async def test_delete_closes_the_sockets_and_refuses_new_ones(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    client = ChannelClient(channel["websocket_url"], channel["channel_token"])
    await client.connect()
    await recovery(client)
    async with server.client() as http:
        response = await http.delete(f"/api/v1/realtime-subscriptions/{channel['channel_id']}")
    assert response.status_code == 200
    with pytest.raises(ChannelClosed):
        await client.next(WAIT)
    await server.publish(**claim_event(org))  # a closed channel records nothing
    with pytest.raises(ChannelClosed, match="channel_closed"):
        await ChannelClient(channel["websocket_url"], channel["channel_token"]).connect()
    await client.close()


async def test_a_repeated_event_id_is_delivered_once(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        await recovery(client)
        event = claim_event(org, event_id=unique("evt"))
        assert (await server.publish(**event))["duplicate"] is False
        assert (await server.publish(**event))["duplicate"] is True
        await server.publish(**claim_event(org))
        assert [e["sequence"] for e in await events(client, 2)] == [1, 2]
        await nothing_more(client)


async def test_a_failed_batch_delivers_nothing(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        await recovery(client)
        too_big = claim_event(org, data={"blob": "x" * 20_000})
        response = await server.publish_batch([claim_event(org), claim_event(org), too_big])
        assert response.status_code == 400
        assert response.json()["field"] == "events.2.data"
        await nothing_more(client)
    assert (await channel_state(server, channel["channel_id"]))["event_count"] == 0


async def test_polling_transport_delivers_and_resumes_too(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    async with ChannelClient(
        channel["websocket_url"], channel["channel_token"], transports=["polling"]
    ) as client:
        await recovery(client)
        await server.publish(**claim_event(org))
        assert [e["sequence"] for e in await events(client, 1)] == [1]
    await server.publish(**claim_event(org))
    async with ChannelClient(
        channel["websocket_url"], channel["channel_token"], transports=["polling"]
    ) as client:
        assert (await recovery(client)).resumed_from == 1
        assert [e["sequence"] for e in await events(client, 1)] == [2]


async def test_history_and_positions_survive_a_restart(own_server):
    own_server.start()
    org = unique("org")
    channel = await own_server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        await recovery(client)
        await own_server.publish(**claim_event(org))
        await events(client, 1)
    own_server.restart()
    await own_server.publish(**claim_event(org))
    await own_server.publish(**claim_event(org))
    assert (await reconnect(own_server, channel["channel_id"]))["missed_events"] == 2
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        resumed = await recovery(client)
        assert (resumed.resumed_from, resumed.replayed) == (1, 2)
        assert [e["sequence"] for e in await events(client, 2)] == [2, 3]
