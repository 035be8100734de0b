"""Every payload a real server sends over Socket.IO matches openapi/asyncapi.yaml."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import socketio

from claims_realtime.models.channel import ALL_EVENT_TYPES
from tests.asyncapi import (
    validate_connect_auth,
    validate_connect_error,
    validate_message,
)
from tests.helpers import unique
from tests.server import Server

pytestmark = pytest.mark.integration

TIMEOUT = 5.0


class Recorder:
    """A raw python-socketio client on one channel namespace that records what it receives."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.received: list[tuple[str, Any]] = []
        self.connect_errors: list[Any] = []
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self._on_any, namespace=namespace)
        self.sio.on("recovery", self._on_recovery, namespace=namespace)
        self.sio.on("channel_closed", self._on_channel_closed, namespace=namespace)
        self.sio.on("connect_error", self._on_connect_error, namespace=namespace)

    async def _on_any(self, event: str, *args: Any) -> None:
        assert len(args) == 1, f"{event} carried {len(args)} arguments"
        self.received.append((event, args[0]))
        # Returning completes the Socket.IO ack the server asked for (id = sequence).

    async def _on_recovery(self, *args: Any) -> None:
        assert len(args) == 1, f"recovery carried {len(args)} arguments"
        self.received.append(("recovery", args[0]))

    async def _on_channel_closed(self, *args: Any) -> None:
        assert len(args) == 1, f"channel_closed carried {len(args)} arguments"
        self.received.append(("channel_closed", args[0]))

    async def _on_connect_error(self, *args: Any) -> None:
        self.connect_errors.extend(args)

    async def connect(self, server: Server, auth: dict[str, Any]) -> None:
        validate_connect_auth(auth)  # what we send is documented too
        await self.sio.connect(
            server.base_url, namespaces=[self.namespace], auth=auth, wait_timeout=TIMEOUT
        )

    async def close(self) -> None:
        await self.sio.shutdown()

    def disconnected(self) -> bool:
        return not self.sio.connected

    def names(self) -> list[str]:
        return [name for name, _ in self.received]

    def events(self) -> list[dict[str, Any]]:
        return [payload for name, payload in self.received if name in ALL_EVENT_TYPES]


async def until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def recorders() -> AsyncIterator[Callable[[str], Recorder]]:
    """Make Recorders; every one is shut down after the test."""
    made: list[Recorder] = []

    def make(namespace: str) -> Recorder:
        made.append(Recorder(namespace))
        return made[-1]

    yield make
    for recorder in made:
        await asyncio.wait_for(recorder.close(), TIMEOUT)


async def organisation_channel(server: Server) -> tuple[dict[str, Any], str, str]:
    """A new organisation channel: (its 201 body, its organisation id, its namespace)."""
    organisation_id = unique("org")
    created = await server.subscribe(
        "organisation", organisation_id=organisation_id, user_id=unique("usr")
    )
    namespace = urlsplit(created["websocket_url"]).path
    assert namespace == f"/channels/{created['channel_id']}"
    return created, organisation_id, namespace


def event_bodies(organisation_id: str) -> list[dict[str, Any]]:
    """One event of each type, with and without the optional fields."""
    claim_id, user_id = unique("clm"), unique("usr")
    bodies: list[dict[str, Any]] = []
    for index, event_type in enumerate(ALL_EVENT_TYPES):
        body: dict[str, Any] = {
            "event_type": event_type,
            "claim_id": claim_id,
            "organisation_id": organisation_id,
            "user_id": user_id,
        }
        if index % 2:
            body["actor_id"] = unique("usr")
            body["occurred_at"] = f"2026-03-26T1{index}:14:22.5+02:00"
            body["data"] = {"index": index, "note": "Ünïcode ✓", "nested": {"ok": [True, None]}}
        bodies.append(body)
    return bodies


async def test_every_payload_the_server_sends_matches_the_document(
    server: Server, recorders: Callable[[str], Recorder]
) -> None:
    created, organisation_id, namespace = await organisation_channel(server)
    channel_id = created["channel_id"]

    live = recorders(namespace)
    await live.connect(server, {"token": created["channel_token"]})
    await until(lambda: "recovery" in live.names(), "recovery")

    bodies = event_bodies(organisation_id)
    published = [await server.publish(**body) for body in bodies]
    await until(lambda: len(live.events()) == len(bodies), "the five events")

    for name, payload in live.received:
        validate_message(name, payload)
    assert live.names() == ["recovery", *ALL_EVENT_TYPES]
    assert live.received[0][1] == {
        "channel_id": channel_id,
        "resumed_from": 0,
        "head_sequence": 0,
        "replayed": 0,
        "recovered": True,
        "first_available_sequence": 1,
        "unavailable": 0,
    }
    for sequence, (event, body, result) in enumerate(
        zip(live.events(), bodies, published, strict=True), start=1
    ):
        assert event["sequence"] == sequence
        assert event["channel_id"] == channel_id
        assert event["event_id"] == result["event_id"]
        for key in ("event_type", "claim_id", "organisation_id", "user_id"):
            assert event[key] == body[key]
        assert event["actor_id"] == body.get("actor_id")
        assert event["data"] == body.get("data", {})
    # An offset is normalised to UTC with a Z (ALL_EVENT_TYPES[1] was sent at 11:14:22.5+02:00).
    assert live.events()[1]["occurred_at"] == "2026-03-26T09:14:22.500Z"

    # What the client sends is documented: `ack {sequence}`.
    ack = {"sequence": 5}
    validate_message("ack", ack)
    await live.sio.emit("ack", ack, namespace=namespace)

    # A second connection resuming after 3 gets the same events 4 and 5, replayed from history.
    resumed = recorders(namespace)
    await resumed.connect(server, {"token": created["channel_token"], "last_sequence": 3})
    await until(lambda: len(resumed.events()) == 2, "the replay of events 4 and 5")
    for name, payload in resumed.received:
        validate_message(name, payload)
    assert resumed.names() == ["recovery", *ALL_EVENT_TYPES[3:]]
    assert resumed.received[0][1] == {
        "channel_id": channel_id,
        "resumed_from": 3,
        "head_sequence": 5,
        "replayed": 2,
        "recovered": True,
        "first_available_sequence": 1,
        "unavailable": 0,
    }
    assert resumed.events() == live.events()[3:]

    # Closing the channel: `channel_closed` on every socket, then the server disconnects.
    async with server.client() as http:
        response = await http.delete(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert response.status_code == 200, response.text
    for recorder in (live, resumed):
        await until(recorder.disconnected, "the server to disconnect the socket")
        assert recorder.names()[-1] == "channel_closed"
        closed = recorder.received[-1][1]
        validate_message("channel_closed", closed)
        assert closed == {"channel_id": channel_id, "closed_at": response.json()["closed_at"]}
    assert live.names().count("channel_closed") == 1

    # Later connections are refused with a documented connect_error.
    late = recorders(namespace)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.connect(server, {"token": created["channel_token"]})
    assert len(late.connect_errors) == 1
    validate_connect_error(late.connect_errors[0])
    validate_message("connect_error", late.connect_errors[0])
    assert late.connect_errors[0]["data"]["code"] == "channel_closed"
    assert late.received == []


async def test_a_wrong_token_is_refused_with_a_documented_connect_error(
    server: Server, recorders: Callable[[str], Recorder]
) -> None:
    created, _, namespace = await organisation_channel(server)
    refused = recorders(namespace)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(server, {"token": "not-the-channel-token"})
    assert len(refused.connect_errors) == 1
    payload = refused.connect_errors[0]
    validate_connect_error(payload)
    assert payload["data"]["code"] == "invalid_token"
    assert refused.received == []


@pytest.mark.parametrize(
    ("auth", "namespace", "code"),
    [
        ({"token": ""}, None, "token_required"),
        ({"token": "t", "last_sequence": -1}, None, "invalid_last_sequence"),
        ({"token": None, "last_sequence": 1}, None, "token_required"),
        ({"token": "real", "last_sequence": 1}, None, "last_sequence_ahead"),
        ({"token": "real"}, "/channels/chan_doesnotexist0", "channel_not_found"),
        ({"token": "real"}, "/claims", "not_a_channel"),
    ],
)
async def test_every_refusal_is_a_documented_connect_error(
    server: Server,
    recorders: Callable[[str], Recorder],
    auth: dict[str, Any],
    namespace: str | None,
    code: str,
) -> None:
    created, _, channel_namespace = await organisation_channel(server)
    auth = {**auth, "token": created["channel_token"]} if auth["token"] == "real" else auth
    refused = recorders(namespace or channel_namespace)
    with pytest.raises(socketio.exceptions.ConnectionError):
        # Deliberately invalid auth objects: sent raw, without validate_connect_auth.
        await refused.sio.connect(
            server.base_url, namespaces=[refused.namespace], auth=auth, wait_timeout=TIMEOUT
        )
    assert len(refused.connect_errors) == 1
    validate_connect_error(refused.connect_errors[0])
    assert refused.connect_errors[0]["data"]["code"] == code
