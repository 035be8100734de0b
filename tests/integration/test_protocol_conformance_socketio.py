"""Socket.IO v5 conformance: the rules of the protocol's specification (the README of
github.com/socketio/socket.io-protocol) on namespace connection, events, acknowledgements
and disconnection, checked against a real server on channel namespaces
(`/channels/<channel_id>`, CONNECT auth `{"token": <channel token>}`) over both Engine.IO
transports, spoken by hand (tests.raw_engineio). One test per rule, the rule quoted in its
docstring, each run over websocket and over HTTP long-polling.

The server runs with a one-second heartbeat (PING_INTERVAL=1, PING_TIMEOUT=1). The Engine.IO
v4 rules are in test_protocol_conformance.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import unique
from tests.raw_engineio import (
    SHORT_HEARTBEAT,
    SHORT_PING_INTERVAL,
    SHORT_PING_TIMEOUT,
    WAIT,
    Session,
    claim_event,
    hostile_lines,
    logged_once,
    raw,
    serving,
)
from tests.server import Server

#: Allowed past a protocol deadline.
MARGIN = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[Server]:
    """This module's server; refused CONNECTs with bad tokens must not trip the per-address
    limit on them (test_socket_fuzz.py tests that limit)."""
    with serving(
        tmp_path_factory.mktemp("sio-conformance"),
        postgres_url,
        **SHORT_HEARTBEAT,
        CONNECT_FAILURE_LIMIT="100000",
    ) as srv:
        yield srv


def namespace(channel: dict[str, Any]) -> str:
    return f"/channels/{channel['channel_id']}"


def payload_after(frame: str, prefix: str) -> Any:
    """The JSON that follows `prefix` in `frame`."""
    assert frame.startswith(prefix), (prefix, frame)
    return json.loads(frame[len(prefix) :])


# -- connection to a namespace -----------------------------------------------------------------


async def test_a_connect_with_the_channel_token_is_answered_with_connect(
    server: Server, session: Session
) -> None:
    """Connection to a namespace: "The server MUST respond with either: a `CONNECT` packet if
    the connection is successful, with the session ID in the payload" (`40/admin,{"sid":
    ...}`), an ID "different from the ID of the underlying Engine.IO connection"."""
    channel = await server.subscribe("user", user_id=unique("usr"))
    ns = namespace(channel)
    await session.send(f"40{ns},{json.dumps({'token': channel['channel_token']})}")
    body = payload_after(await session.until("4"), f"40{ns},")
    assert isinstance(body, dict) and isinstance(body.get("sid"), str) and body["sid"], body
    assert body["sid"] != session.sid, body


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param("", id="no-auth"),
        pytest.param('{"token":"not-the-token"}', id="wrong-token"),
        pytest.param("{}", id="no-token"),
    ],
)
async def test_a_connect_without_the_channel_token_is_answered_with_connect_error(
    server: Server, session: Session, auth: str
) -> None:
    """Connection to a namespace: "The server MUST respond with either [...] or a
    `CONNECT_ERROR` packet if the connection is not allowed" (`44/admin,{"message":...}`:
    "the payload `CONNECT_ERROR` packet is now an object")."""
    channel = await server.subscribe("user", user_id=unique("usr"))
    ns = namespace(channel)
    await session.send(f"40{ns},{auth}")
    body = payload_after(await session.until("4"), f"44{ns},")
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    assert body["message"], body


@pytest.mark.parametrize(
    ("connect", "refusal"),
    [
        pytest.param('40/nope,{"token":"t"}', "44/nope,", id="other-namespace"),
        pytest.param('40{"token":"t"}', "44", id="main-namespace"),
    ],
)
async def test_a_connect_to_a_namespace_that_is_no_channel_is_answered_with_connect_error(
    session: Session, connect: str, refusal: str
) -> None:
    """Connection to a namespace: "or a `CONNECT_ERROR` packet if the connection is not
    allowed": only channel namespaces are served, the main one (`/`, left out of the
    encoding) included."""
    await session.send(connect)
    body = payload_after(await session.until("4"), refusal)
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body


async def test_a_client_that_never_connects_to_a_namespace_is_closed(session: Session) -> None:
    """Connection to a namespace: "At the beginning of a Socket.IO session, the client MUST
    send a `CONNECT` packet"; "If the server does not receive a `CONNECT` packet first, then
    it MUST close the connection": a client that answers every ping but never connects is
    closed by pingInterval + pingTimeout (as the reference server's `connectTimeout`)."""
    deadline = SHORT_PING_INTERVAL + SHORT_PING_TIMEOUT + MARGIN
    await session.closed_by_server(deadline - session.age(), pong=True)


# -- sending and receiving data ----------------------------------------------------------------


async def test_events_come_as_event_packets_with_the_sequence_as_ack_id_and_acks_are_accepted(
    server: Server, session: Session
) -> None:
    """Sending and receiving data / Acknowledgement: an event is `2/admin,13["foo"]` ("The
    sender MAY include an event ID in order to request an acknowledgement"): ours are
    `42/channels/<id>,<sequence>["<event_type>",{envelope}]`; the client's ACK
    `43/channels/<id>,<sequence>[]` is taken (it confirms that sequence: a new connection
    resumes after it)."""
    user = unique("usr")
    channel = await server.subscribe("user", user_id=user)
    ns = namespace(channel)
    published = [await server.publish(**claim_event(user)) for _ in range(2)]
    await session.join(channel)  # the two are replayed
    published.append(await server.publish(**claim_event(user)))  # and this one is live
    for sequence, event in enumerate(published, start=1):
        frame = await session.until(f"42{ns},")
        match = re.fullmatch(rf"42{re.escape(ns)},([0-9]+)(\[.*\])", frame, re.DOTALL)
        assert match is not None, frame
        assert int(match.group(1)) == sequence, frame
        name, envelope = json.loads(match.group(2))
        assert name == envelope["event_type"] == "status_changed", frame
        assert envelope["channel_id"] == channel["channel_id"], frame
        assert (envelope["sequence"], envelope["event_id"]) == (sequence, event["event_id"])
    await session.send(f"43{ns},1[]")
    # A round trip on the same session: the ACK sent before it has been taken.
    await session.send(f'42{ns},9["ack",{{"sequence":0}}]')
    await session.until(f"43{ns},9")
    # A connection that resumes while the position is being written back may start from the
    # older one (the guarantee allows replaying more, never less): the ack shows once it lands.
    deadline = time.monotonic() + WAIT
    while True:
        async with raw(server) as other:
            recovery = await other.join(channel)
        if recovery["resumed_from"] == 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert recovery["resumed_from"] == 1, recovery
    assert hostile_lines(server, session.sid) == []


async def test_an_event_asking_for_an_ack_is_acknowledged(server: Server, session: Session) -> None:
    """Acknowledgement: "The receiver MUST respond with an `ACK` packet with the same event
    ID. The payload is mandatory and MUST be an array (possibly empty)." (The client's one
    event, `ack`, answers nothing: `[]`.)"""
    channel = await server.subscribe("user", user_id=unique("usr"))
    ns = namespace(channel)
    await session.join(channel)
    await session.send(f'42{ns},7["ack",{{"sequence":0}}]')
    assert payload_after(await session.until(f"43{ns},"), f"43{ns},7") == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("{}", id="object"),
        pytest.param("[]", id="empty-array"),
        pytest.param('"ack"', id="string"),
    ],
)
async def test_an_event_whose_payload_is_not_a_non_empty_array_closes_the_connection(
    server: Server, session: Session, body: str
) -> None:
    """Sending and receiving data: "The payload is mandatory and MUST be a non-empty array.
    If that's not the case, then the receiver MUST close the connection." (Logged once, as
    every broken client's input.)"""
    channel = await server.subscribe("user", user_id=unique("usr"))
    ns = namespace(channel)
    await session.join(channel)
    await session.send(f"42{ns},{body}")
    await session.closed_by_server(MARGIN, pong=True)
    await logged_once(server, session.sid)


# -- disconnection from a namespace ------------------------------------------------------------


async def test_a_disconnect_from_a_namespace_keeps_the_engineio_connection(
    server: Server, session: Session
) -> None:
    """Disconnection from a namespace: "At any time, one side can end the connection to a
    namespace by sending a `DISCONNECT` packet [...] No response is expected from the other
    side. The low-level connection MAY be kept alive": it is (the client joins again on it)."""
    channel = await server.subscribe("user", user_id=unique("usr"))
    ns = namespace(channel)
    await session.join(channel)
    await session.send(f"41{ns},")
    await session.join(channel)
    assert hostile_lines(server, session.sid) == []
