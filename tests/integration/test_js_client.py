"""The official JavaScript client (npm `socket.io-client`, under Node) against the real server.

Node runs tests/integration/js/client.mjs, which prints one JSON line per observation and takes
commands on stdin; this side publishes over HTTP and waits for the expected lines, each wait
bounded. examples/js/subscriber.mjs, the example integrators copy, is run as is.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, unique
from tests.programs import WAIT, run_js_client, run_node
from tests.server import Server

pytestmark = [pytest.mark.integration, pytest.mark.node]

EXAMPLE = ROOT / "examples" / "js" / "subscriber.mjs"
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def publish(server: Server, **event: Any) -> dict[str, Any]:
    """Publish one event; answer the envelope fields a channel should carry for it."""
    result = await server.publish(**event)
    assert result["channels"] >= 1, result
    return {
        "event_id": result["event_id"],
        "event_type": event["event_type"],
        "claim_id": event["claim_id"],
        "organisation_id": event["organisation_id"],
        "user_id": event["user_id"],
        "actor_id": event.get("actor_id"),
        "occurred_at": event.get("occurred_at", RFC3339_MS),
        "data": event.get("data", {}),
    }


async def missed_events(server: Server, channel_id: str, expected: int) -> int:
    """PUT .../reconnect until it reports `expected` (positions are written back every 0.5 s
    and on disconnect) or a few seconds pass; answer the last count."""
    deadline = time.monotonic() + WAIT
    async with server.client() as http:
        while True:
            response = await http.put(f"/api/v1/realtime-subscriptions/{channel_id}/reconnect")
            assert response.status_code == 200, response.text
            missed = int(response.json()["missed_events"])
            if missed == expected or time.monotonic() > deadline:
                return missed
            await asyncio.sleep(0.1)


def assert_envelope(
    payload: dict[str, Any], channel_id: str, sequence: int, want: dict[str, Any]
) -> None:
    """`want` as answered by publish(): occurred_at is a value or, if not given, a pattern."""
    payload, want = dict(payload), dict(want)
    occurred_at, want_occurred_at = payload.pop("occurred_at"), want.pop("occurred_at")
    assert payload == {"channel_id": channel_id, "sequence": sequence, **want}
    if isinstance(want_occurred_at, re.Pattern):
        assert want_occurred_at.match(occurred_at), occurred_at
    else:
        assert occurred_at == want_occurred_at


def fresh_recovery(channel_id: str) -> dict[str, Any]:
    return {
        "channel_id": channel_id,
        "resumed_from": 0,
        "head_sequence": 0,
        "replayed": 0,
        "recovered": True,
        "first_available_sequence": 1,
        "unavailable": 0,
    }


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_events_arrive_in_order_over_each_transport(
    server: Server, tmp_path: Path, transport: str
) -> None:
    org, user = unique("org"), unique("usr")
    channel = await server.subscribe("organisation", organisation_id=org, user_id=user)
    channel_id = channel["channel_id"]
    async with run_js_client(tmp_path, channel, transports=[transport]) as client:
        recovery = await client.expect("recovery")
        assert client.kinds() == ["auth", "connect", "recovery"], client.report()
        assert client.lines[1]["transport"] == transport
        assert recovery["payload"] == fresh_recovery(channel_id)

        claim = unique("clm")
        expected = [
            await publish(
                server,
                event_type="claim_submitted",
                claim_id=claim,
                organisation_id=org,
                user_id=user,
                data={"amount": 120.5},
            ),
            await publish(
                server,
                event_type="status_changed",
                claim_id=claim,
                organisation_id=org,
                user_id=unique("usr"),
                actor_id=unique("act"),
                occurred_at="2026-03-26T08:00:00.123Z",
                data={"from": "submitted", "to": "in_review"},
            ),
            await publish(
                server,
                event_type="comment_added",
                claim_id=claim,
                organisation_id=org,
                user_id=user,
                data={"text": "ünïcode ✓"},
            ),
        ]
        received = await client.events(3)
        for sequence, (payload, want) in enumerate(zip(received, expected, strict=True), 1):
            assert_envelope(payload, channel_id, sequence, want)
        event_lines = [line for line in client.lines if line["kind"] == "event"]
        assert [line["name"] for line in event_lines] == [want["event_type"] for want in expected]
        assert all(line["has_ack"] for line in event_lines), "every event carries an ack id"

        await client.send("quit")
        assert await client.finish() == 0, client.report()
        assert client.sequences() == [1, 2, 3], client.report()


async def test_ack_callback_moves_the_resume_point(server: Server, tmp_path: Path) -> None:
    org, user = unique("org"), unique("usr")
    channel = await server.subscribe("organisation", organisation_id=org, user_id=user)
    channel_id = channel["channel_id"]
    event = {
        "event_type": "status_changed",
        "claim_id": unique("clm"),
        "organisation_id": org,
        "user_id": user,
    }
    async with run_js_client(tmp_path, channel, ack="callback") as client:
        await client.expect("recovery")
        for _ in range(3):
            await publish(server, **event)
        assert [e["sequence"] for e in await client.events(3)] == [1, 2, 3]
        await client.send("disconnect")
        assert (await client.expect("disconnect"))["reason"] == "io client disconnect"
        assert await missed_events(server, channel_id, 0) == 0

        for _ in range(2):  # nobody connected now
            await publish(server, **event)
        assert await missed_events(server, channel_id, 2) == 2

        await client.send("quit")
        assert await client.finish() == 0, client.report()
        assert client.sequences() == [1, 2, 3], client.report()


@pytest.mark.parametrize("ack", ["callback", "emit"])
async def test_resume_point_is_the_last_acked_sequence_not_the_last_delivered(
    server: Server, tmp_path: Path, ack: str
) -> None:
    """Events 1-3 are delivered but only 1-2 confirmed (by callback, or `ack {sequence}`)."""
    user = unique("usr")
    channel = await server.subscribe("user", user_id=user)
    event = {
        "event_type": "comment_added",
        "claim_id": unique("clm"),
        "organisation_id": unique("org"),
        "user_id": user,
    }
    async with run_js_client(tmp_path, channel, ack=ack, ack_upto=2) as client:
        await client.expect("recovery")
        for _ in range(3):
            await publish(server, **event)
        assert [e["sequence"] for e in await client.events(3)] == [1, 2, 3]
        await client.send("disconnect")
        await client.expect("disconnect")
        assert await missed_events(server, channel["channel_id"], 1) == 1


async def test_client_resumes_after_a_drop_over_websocket(server: Server, tmp_path: Path) -> None:
    await check_drop_and_resume(server, tmp_path, "websocket")


async def test_client_resumes_after_a_drop_over_polling(own_server: Server, tmp_path: Path) -> None:
    # A server of its own: after a long-polling client goes away, the server keeps that
    # session's pending GET open (up to ping_interval + ping_timeout, 45 s) and a SIGTERM'd
    # uvicorn waits for it, so a shared server would take the fixture's 15 s to stop and be
    # killed anyway. This one is killed at once: its shutdown is not what is tested here.
    own_server.start()
    try:
        await check_drop_and_resume(own_server, tmp_path, "polling")
    finally:
        own_server.stop(kill=True)


async def check_drop_and_resume(server: Server, tmp_path: Path, transport: str) -> None:
    """Events 1-2 live, 3-5 published while the client is away and replayed exactly once
    when socket.io-client reconnects by itself with auth {last_sequence: 2}, then 6 live."""
    user = unique("usr")
    channel = await server.subscribe("user", user_id=user)
    channel_id = channel["channel_id"]

    def event(n: int) -> dict[str, Any]:
        return {
            "event_type": "status_changed",
            "claim_id": unique("clm"),
            "organisation_id": unique("org"),
            "user_id": user,
            "data": {"n": n},
        }

    # Only event 1 is confirmed, so the server's own resume point (1) differs from the
    # client's (2): `resumed_from: 2` shows that the client's auth.last_sequence is used.
    async with run_js_client(tmp_path, channel, transports=[transport], ack_upto=1) as client:
        assert (await client.expect("recovery"))["payload"] == fresh_recovery(channel_id)
        expected = [await publish(server, **event(n)) for n in (1, 2)]
        assert [e["sequence"] for e in await client.events(2)] == [1, 2]

        # The drop: socket.io-client reconnects by itself and calls the auth function again,
        # but client.mjs holds that connection's CONNECT until "release", so that these
        # events surely come while it is away.
        await client.send("drop")
        await client.expect("dropping")
        disconnect = await client.expect("disconnect")
        assert disconnect["reason"] not in ("io server disconnect", "io client disconnect")
        expected += [await publish(server, **event(n)) for n in (3, 4, 5)]
        assert (await client.expect("auth"))["auth"] == {"last_sequence": 2}
        await client.send("release")

        connect = await client.expect("connect")
        assert connect["transport"] == transport
        recovery = await client.expect("recovery")
        assert recovery["payload"] == {
            "channel_id": channel_id,
            "resumed_from": 2,
            "head_sequence": 5,
            "replayed": 3,
            "recovered": True,
            "first_available_sequence": 1,
            "unavailable": 0,
        }
        replayed = await client.events(3)
        expected.append(await publish(server, **event(6)))
        live = await client.events(1)

        await client.send("quit")
        assert await client.finish() == 0, client.report()

    assert client.sequences() == [1, 2, 3, 4, 5, 6], client.report()
    for sequence, payload in enumerate(replayed + live, 3):
        assert_envelope(payload, channel_id, sequence, expected[sequence - 1])
    after_drop = client.kinds()[client.kinds().index("dropping") :]
    assert after_drop.count("connect") == 1 and after_drop.count("recovery") == 1, client.report()


@pytest.mark.parametrize("refusal", ["invalid_token", "channel_not_found", "token_required"])
async def test_refused_connection_is_a_connect_error_with_a_code(
    server: Server, tmp_path: Path, refusal: str
) -> None:
    channel = await server.subscribe("user", user_id=unique("usr"))
    if refusal == "invalid_token":
        channel["channel_token"] = "not-the-token"
    elif refusal == "channel_not_found":
        channel["websocket_url"] = channel["websocket_url"].replace(
            channel["channel_id"], unique("chan")
        )
    else:
        channel["channel_token"] = ""
    async with run_js_client(tmp_path, channel) as client:
        error = await client.expect("connect_error")
        assert error["data"] == {"code": refusal}
        assert isinstance(error["message"], str) and error["message"].strip()
        await client.send("quit")
        assert await client.finish() == 0, client.report()
    assert "connect" not in client.kinds(), client.report()


async def test_delete_sends_channel_closed_then_disconnects(server: Server, tmp_path: Path) -> None:
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id=unique("usr"))
    channel_id = channel["channel_id"]
    async with run_js_client(tmp_path, channel) as client:
        await client.expect("recovery")
        async with server.client() as http:
            response = await http.delete(f"/api/v1/realtime-subscriptions/{channel_id}")
        assert response.status_code == 200, response.text
        closed = await client.expect("channel_closed")
        assert closed["payload"] == {
            "channel_id": channel_id,
            "closed_at": response.json()["closed_at"],
        }
        disconnect = await client.expect("disconnect")
        assert disconnect["reason"] == "io server disconnect"
        await client.send("quit")
        assert await client.finish() == 0, client.report()
    kinds = client.kinds()
    assert kinds[kinds.index("channel_closed") + 1] == "disconnect", client.report()
    assert kinds.count("connect") == 1, "no reconnection after the server closed it"


async def test_example_subscriber_prints_events_and_exits_when_the_channel_closes(
    server: Server, tmp_path: Path
) -> None:
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id=unique("usr"))
    channel_id = channel["channel_id"]
    event = {
        "event_type": "claim_approved",
        "claim_id": unique("clm"),
        "organisation_id": org,
        "user_id": unique("usr"),
    }
    async with run_node(
        tmp_path, str(EXAMPLE), channel["websocket_url"], channel["channel_token"]
    ) as example:
        expected = [await publish(server, **event) for _ in range(2)]
        printed = [await example.next_line(), await example.next_line()]
        for sequence, payload in enumerate(printed, 1):
            assert payload is not None, example.report()
            assert_envelope(payload, channel_id, sequence, expected[sequence - 1])

        async with server.client() as http:
            response = await http.delete(f"/api/v1/realtime-subscriptions/{channel_id}")
        assert response.status_code == 200, response.text
        assert await example.finish() == 0, example.report()
    assert len(example.lines) == 2, example.report()
    stderr = example.stderr_path.read_text()
    assert "recovery: resumed from 0" in stderr and f"channel {channel_id} closed" in stderr


async def test_example_subscriber_exits_1_on_a_wrong_token(server: Server, tmp_path: Path) -> None:
    channel = await server.subscribe("user", user_id=unique("usr"))
    async with run_node(tmp_path, str(EXAMPLE), channel["websocket_url"], "wrong") as example:
        assert await example.finish() == 1, example.report()
    assert example.lines == []
    assert "invalid_token" in example.stderr_path.read_text()


async def test_example_subscriber_resumes_across_a_server_restart(
    own_server: Server, tmp_path: Path
) -> None:
    """The server goes away under the example; socket.io-client reconnects by itself (its
    default backoff: about 1, 2, 4 s), the auth function sends last_sequence 2, and the
    example prints each event exactly once."""
    own_server.start()
    user = unique("usr")
    channel = await own_server.subscribe("user", user_id=user)
    channel_id = channel["channel_id"]
    event = {
        "event_type": "claim_rejected",
        "claim_id": unique("clm"),
        "organisation_id": unique("org"),
        "user_id": user,
    }
    async with run_node(
        tmp_path, str(EXAMPLE), channel["websocket_url"], channel["channel_token"]
    ) as example:
        expected = [await own_server.publish(**event) for _ in range(2)]
        assert [(await example.next_line() or {}).get("sequence") for _ in range(2)] == [1, 2]

        own_server.restart()  # same port and database
        expected.append(await own_server.publish(**event))
        third = await example.next_line(timeout=20)  # bounded by the client's backoff
        assert third is not None and third["sequence"] == 3, example.report()

        async with own_server.client() as http:
            response = await http.delete(f"/api/v1/realtime-subscriptions/{channel_id}")
        assert response.status_code == 200, response.text
        assert await example.finish() == 0, example.report()
    assert [line["event_id"] for line in example.lines] == [e["event_id"] for e in expected]
    assert "recovery: resumed from 2" in example.stderr_path.read_text(), example.report()
