"""Hostile input over raw Engine.IO websockets, against a real server.

Each test opens raw connections (`ws://host/socket.io/?EIO=4&transport=websocket`, the
`websockets` package) and sends what no Socket.IO client would: garbage frames, wrong packet
types, CONNECTs to made-up namespaces or with malformed `auth`, events before connecting,
unknown events, malformed `ack` events and ACK packets, huge payloads. For each, the server
either closes that connection or ignores the packet, logs it once per connection (read back
from the server's log), and keeps serving a legitimate subscriber on another connection
(checked at the end of every test: publish, receive). Connect attempts with bad tokens are
rate-limited per address, refused before any token is looked at, and recover by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from claims_realtime.realtime.client import ChannelClient, Recovery
from tests.helpers import unique
from tests.raw_engineio import (
    MAX_PACKET,
    WAIT,
    claim_event,
    hostile_lines,
    logged_once,
    raw,
)
from tests.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[Server]:
    """This module's server. Fuzzing `auth` earns many `token_required` refusals, all from
    127.0.0.1: the connect-failure limit is raised so that they do not trip it (its own
    test below runs a server with a low one)."""
    env = {"CONNECT_FAILURE_LIMIT": "100000"}
    if postgres_url:
        env["DATABASE_URL"] = postgres_url
    srv = Server(tmp_path_factory.mktemp("fuzz"), **env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def next_event(client: ChannelClient) -> dict[str, Any]:
    while True:
        message = await client.next(WAIT)
        if not isinstance(message, Recovery):
            return message


@contextlib.asynccontextmanager
async def bystander(server: Server) -> AsyncIterator[None]:
    """A legitimate subscriber on its own connection, receiving before and after whatever
    the body of the `async with` does; and no traceback in the server's log."""
    user = unique("usr")
    channel = await server.subscribe("user", user_id=user)
    async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
        before = await server.publish(**claim_event(user))
        assert (await next_event(client))["event_id"] == before["event_id"]
        yield
        after = await server.publish(**claim_event(user))
        assert (await next_event(client))["event_id"] == after["event_id"]
    log = server.log_path.read_text(errors="replace")
    for sign in ("Traceback", "Unknown receive error", "handler error", "never retrieved"):
        assert sign not in log, log[-3000:]


async def probe_channel(server: Server) -> dict[str, Any]:
    return await server.subscribe("user", user_id=unique("usr"))


# -- frames that end the connection -----------------------------------------------------------

DEEP = "[" * 30_000

CLOSING_FRAMES = [
    pytest.param("", id="empty-text"),
    pytest.param("x", id="not-a-packet-type"),
    pytest.param("9", id="engineio-type-9"),
    pytest.param("7hello", id="engineio-type-7"),
    pytest.param("-1", id="negative-type"),
    pytest.param("b!!!not-base64", id="bad-base64-binary"),
    pytest.param("0", id="engineio-open-from-client"),
    pytest.param("2", id="engineio-ping-from-client"),
    pytest.param("6", id="engineio-noop-from-client"),
    pytest.param("4" + DEEP, id="engineio-deeply-nested-json"),
    pytest.param(b"\x00\x01\xff\xfe", id="binary-frame"),
    pytest.param(b"", id="empty-binary-frame"),
    pytest.param("4x", id="socketio-not-a-packet-type"),
    pytest.param("49", id="socketio-type-9"),
    pytest.param('4{"a":1}', id="socketio-json-object"),
    pytest.param("4[1,2]", id="socketio-json-array"),
    pytest.param('44/channels/chan_x,{"message":"no"}', id="socketio-connect-error-from-client"),
    pytest.param('451-/channels/chan_x,["ack",{"_placeholder":true,"num":0}]', id="binary-event"),
    pytest.param("461-/channels/chan_x,1[]", id="binary-ack"),
    pytest.param("43/channels/chan_x,1\u0000[]", id="ack-with-nul-before-args"),
    pytest.param("43/channels/chan_x,-1[]", id="ack-negative-id"),
    pytest.param("43/channels/chan_x,abc[]", id="ack-id-not-a-number"),
    pytest.param("42/channels/chan_x,[" + DEEP, id="socketio-deeply-nested-event"),
    pytest.param("40/channels/chan_x,{" + '"a":' * 20_000, id="socketio-broken-connect-json"),
    pytest.param("4" + "x" * (MAX_PACKET + 1), id="text-over-the-engineio-limit"),
    pytest.param(
        '40/channels/chan_x,{"token":"' + "a" * MAX_PACKET + '"}', id="connect-auth-over-the-limit"
    ),
    pytest.param(b"4" * (MAX_PACKET + 1), id="binary-over-the-engineio-limit"),
    pytest.param("4" + "x" * (2 * 1024 * 1024), id="text-over-the-websocket-limit"),
]


@pytest.mark.parametrize("frame", CLOSING_FRAMES)
async def test_garbage_closes_that_connection_and_is_logged_once(
    server: Server, frame: str | bytes
) -> None:
    async with bystander(server):
        async with raw(server) as conn:
            # The same garbage many times over: one log line, then the connection is gone.
            await conn.send(*[frame] * 20)
            await conn.closed_by_server()
        if len(frame) <= 2 * MAX_PACKET:
            await logged_once(server, conn.sid)
        else:  # uvicorn closes frames over its limit before the application sees them
            assert hostile_lines(server, conn.sid) == []


# -- refused CONNECTs: the connection stays ----------------------------------------------------

BAD_NAMESPACES = [
    pytest.param("/", id="root"),
    pytest.param("/nope", id="other"),
    pytest.param("/channels", id="prefix-only"),
    pytest.param("/channels/", id="empty-id"),
    pytest.param("/channels/chan_UPPER", id="uppercase"),
    pytest.param("/channels/chan_" + "a" * 65, id="too-long"),
    pytest.param("/channels/../../etc/passwd", id="traversal"),
    pytest.param("/channels/chan_abc/extra", id="extra-segment"),
    pytest.param("/channels/chan_abc\u0000", id="nul"),
    pytest.param("/channels/chan_\u00e9t\u00e9", id="non-ascii"),
]


@pytest.mark.parametrize("namespace", BAD_NAMESPACES)
async def test_connect_to_a_namespace_that_is_no_channel_is_refused(
    server: Server, namespace: str
) -> None:
    async with bystander(server):
        probe = await probe_channel(server)
        async with raw(server) as conn:
            for _ in range(5):
                assert await conn.refusal(namespace, '{"token":"t"}') == "not_a_channel"
            await conn.alive(probe)
        await logged_once(server, conn.sid)


async def test_connect_to_a_channel_that_does_not_exist_is_refused(server: Server) -> None:
    async with bystander(server):
        probe = await probe_channel(server)
        async with raw(server) as conn:
            code = await conn.refusal("/channels/chan_doesnotexist0000", '{"token":"t"}')
            assert code == "channel_not_found"
            await conn.alive(probe)


def malformed_auths(token: str) -> list[tuple[str | None, str]]:
    """(auth as JSON text, or None for a CONNECT without any) -> the refusal code."""
    t = json.dumps(token)
    return [
        (None, "token_required"),
        ("[]", "token_required"),
        ('"' + token + '"', "token_required"),
        ("5", "token_required"),
        ("null", "token_required"),
        ("true", "token_required"),
        ("{}", "token_required"),
        ('{"token":5}', "token_required"),
        ('{"token":""}', "token_required"),
        ('{"token":["x"]}', "token_required"),
        ('{"token":{"$ne":null}}', "token_required"),
        ('{"token":null}', "token_required"),
        ('{"token":"wrong"}', "invalid_token"),
        ('{"token":"' + "a" * 60_000 + '"}', "invalid_token"),
        ('{"token":' + t + ',"last_sequence":"1"}', "invalid_last_sequence"),
        ('{"token":' + t + ',"last_sequence":-1}', "invalid_last_sequence"),
        ('{"token":' + t + ',"last_sequence":1.5}', "invalid_last_sequence"),
        ('{"token":' + t + ',"last_sequence":true}', "invalid_last_sequence"),
        ('{"token":' + t + ',"last_sequence":[1]}', "invalid_last_sequence"),
        ('{"token":' + t + ',"last_sequence":{"a":1}}', "invalid_last_sequence"),
        ('{"token":' + t + ',"last_sequence":' + "9" * 40 + "}", "last_sequence_ahead"),
        ('{"token":' + t + ',"last_sequence":1e400}', "invalid_last_sequence"),
    ]


async def test_connect_with_malformed_auth_is_refused_with_its_code(server: Server) -> None:
    async with bystander(server):
        channel = await probe_channel(server)
        namespace = f"/channels/{channel['channel_id']}"
        async with raw(server) as conn:
            for auth, code in malformed_auths(channel["channel_token"]):
                assert await conn.refusal(namespace, auth) == code, auth and auth[:80]
            await conn.join(channel)  # the same connection, now with the right auth


# -- ignored packets: the connection stays -----------------------------------------------------


async def test_events_before_connecting_are_ignored_and_logged_once(server: Server) -> None:
    async with bystander(server):
        probe = await probe_channel(server)
        other = await probe_channel(server)
        ns = f"/channels/{other['channel_id']}"
        async with raw(server) as conn:
            await conn.send(
                f'42{ns},["ack",{{"sequence":1}}]',
                f"43{ns},1[]",
                f"43{ns},5",
                '42["ack",{"sequence":1}]',
                "431[]",
                '42/nope,["ack",{"sequence":1}]',
                f"41{ns},",
            )
            await conn.alive(probe)
        await logged_once(server, conn.sid)


UNKNOWN_EVENTS = [
    '["connect",{"token":"x"}]',
    '["disconnect"]',
    '["disconnect","client namespace disconnect"]',
    '["hello"]',
    '["recovery",{}]',
    '["__class__"]',
    '["_trigger_event"]',
]

#: EVENT payloads that are not `[name, ...args]`: malformed, like any undecodable packet.
MALFORMED_EVENTS = ["[]", "[5]", "[null]", '[["ack"]]', '{"a":1}', "{}", '"ack"', "5", ""]

MALFORMED_ACK_EVENTS = [
    '["ack"]',
    '["ack",null]',
    '["ack",5]',
    '["ack","5"]',
    '["ack",[1]]',
    '["ack",{}]',
    '["ack",{"sequence":"1"}]',
    '["ack",{"sequence":-1}]',
    '["ack",{"sequence":1.5}]',
    '["ack",{"sequence":true}]',
    '["ack",{"sequence":null}]',
    '["ack",{"sequence":[1]}]',
    '["ack",{"sequence":{"a":1}}]',
    '["ack",{"sequence":1},"extra"]',
    '["ack",' + "[" * 500 + "]" * 500 + "]",
]


async def test_unknown_events_and_malformed_acks_are_ignored_and_logged_once(
    server: Server,
) -> None:
    async with bystander(server):
        user = unique("usr")
        channel = await server.subscribe("user", user_id=user)
        ns = f"/channels/{channel['channel_id']}"
        async with raw(server) as conn:
            await conn.join(channel)
            await conn.send(*(f"42{ns},{body}" for body in UNKNOWN_EVENTS))
            await conn.send(*(f"42{ns},{body}" for body in MALFORMED_ACK_EVENTS))
            await conn.send(*(f"42{ns},7{body}" for body in MALFORMED_ACK_EVENTS))
            # Still subscribed: neither `disconnect` nor `connect` reached the namespace.
            published = await server.publish(**claim_event(user))
            frame = await conn.until(f"42{ns},")
            assert published["event_id"] in frame and '"sequence":1' in frame
        await logged_once(server, conn.sid)


@pytest.mark.parametrize("body", MALFORMED_EVENTS)
async def test_an_event_that_is_not_a_named_array_closes_the_connection(
    server: Server, body: str
) -> None:
    async with bystander(server):
        channel = await server.subscribe("user", user_id=unique("usr"))
        ns = f"/channels/{channel['channel_id']}"
        async with raw(server) as conn:
            await conn.join(channel)
            await conn.send(*[f"42{ns},{body}"] * 5)
            await conn.closed_by_server()
        await logged_once(server, conn.sid)


#: ACK packets after `43/channels/<id>,` that are taken as an ack of their id (capped at what
#: the socket was sent; the fast path never reads the arguments) or ignored and logged.
MALFORMED_ACK_PACKETS = [
    "1[]",  # a real one (sequence 1), then nonsense
    "99999999999999999[]",
    "9" * 40 + "[]",
    "1",
    "1{}",
    "1null",
    "\u0661[]",  # ARABIC-INDIC DIGIT ONE: python-socketio's decoder reads it as 1
]
#: Acks whose arguments do not decode. The fast path reads the id alone and takes them as
#: acks; python-socketio (FAST_PATHS=off) finds an undecodable packet, which closes the
#: connection (docs/protocol.md). Sent last, so that both paths see every id above.
UNDECODABLE_ACK_PACKETS = ["1[", "1[" + "[" * 30_000]
FAST_PATHS_ON = os.environ.get("FAST_PATHS", "").strip().lower() != "off"


async def test_malformed_ack_packets_never_confirm_beyond_what_was_delivered(
    server: Server,
) -> None:
    """ACK packets (`43/channels/<id>,<ack id>[...]`, read by the server's fast path) with
    odd ids are ignored or capped at what the socket was sent: a client claiming sequence
    10^40 must not make its channel skip the events published after."""
    async with bystander(server):
        user = unique("usr")
        channel = await server.subscribe("user", user_id=user)
        ns = f"/channels/{channel['channel_id']}"
        first = await server.publish(**claim_event(user))
        async with raw(server) as conn:
            await conn.join(channel)  # replays sequence 1
            frame = await conn.until(f"42{ns},1[")
            assert first["event_id"] in frame
            acks = [*MALFORMED_ACK_PACKETS, *UNDECODABLE_ACK_PACKETS]
            await conn.send(*(f"43{ns},{body}" for body in acks))
            if FAST_PATHS_ON:
                await conn.alive(await probe_channel(server))
            else:
                await conn.closed_by_server()
        await logged_once(server, conn.sid)  # `1{}`, `1null`, `1`: not `<id>[...]`
        second = await server.publish(**claim_event(user))
        # Resuming from the channel's stored position: sequence 2 must come, not be skipped.
        async with ChannelClient(channel["websocket_url"], channel["channel_token"]) as client:
            received = await next_event(client)
            while received["sequence"] < 2:
                received = await next_event(client)
            assert received["event_id"] == second["event_id"]


# -- Engine.IO's own limits over long-polling --------------------------------------------------


async def test_a_polling_post_over_the_engineio_limit_ends_the_session(server: Server) -> None:
    async with bystander(server):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http:
            opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
            assert opened.status_code == 200, opened.text
            sid = json.loads(opened.text[1:])["sid"]
            response = await http.post(
                "/socket.io/",
                params={"EIO": "4", "transport": "polling", "sid": sid},
                content=b"4" + b"x" * (MAX_PACKET + 1),
                headers={"Content-Type": "text/plain;charset=UTF-8"},
            )
            # python-engineio answers 400 and closes the session (it used to hang instead).
            assert response.status_code == 400, response.text
            again = await http.get(
                "/socket.io/", params={"EIO": "4", "transport": "polling", "sid": sid}
            )
            assert again.status_code == 400, again.text  # the session is gone


POLLING_GARBAGE = [
    pytest.param(b"x", id="not-a-packet-type"),
    pytest.param(b"3\x1e9", id="unknown-type-after-a-pong"),
    pytest.param(b"0", id="open-from-client"),
    pytest.param(b"2", id="ping-from-client"),
    pytest.param(b"6", id="noop-from-client"),
    pytest.param(b"\xff\xfe4", id="not-utf-8"),
    pytest.param(b"bA", id="bad-base64"),
    pytest.param(b"d=%ZZ", id="broken-jsonp-form"),
]


async def open_polling_session(http: httpx.AsyncClient) -> str:
    opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert opened.status_code == 200, opened.text
    return str(json.loads(opened.text[1:])["sid"])


@pytest.mark.parametrize("body", POLLING_GARBAGE)
async def test_garbage_over_long_polling_ends_the_session_and_is_logged_once(
    server: Server, body: bytes
) -> None:
    async with bystander(server):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http:
            sid = await open_polling_session(http)
            query = {"EIO": "4", "transport": "polling", "sid": sid}
            response = await http.post("/socket.io/", params=query, content=body)
            assert response.status_code == 400, response.text
            again = await http.get("/socket.io/", params=query)
            assert again.status_code == 400, again.text  # the session is gone
        await logged_once(server, sid)
    assert "Traceback" not in server.log_path.read_text(errors="replace")


async def test_a_long_polling_post_may_carry_a_thousand_acks(server: Server) -> None:
    """A polling client sends every ack it owes in one POST: python-engineio's own cap (16
    packets) would have made an honest client's batch look like garbage."""
    async with bystander(server):
        channel = await server.subscribe("user", user_id=unique("usr"))
        ns = f"/channels/{channel['channel_id']}"
        async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http:
            sid = await open_polling_session(http)
            query = {"EIO": "4", "transport": "polling", "sid": sid}
            joined = f"40{ns}," + json.dumps({"token": channel["channel_token"]})
            assert (await http.post("/socket.io/", params=query, content=joined)).status_code == 200
            acks = "\x1e".join(f"43{ns},{n}[]" for n in range(1, 1001))
            response = await http.post("/socket.io/", params=query, content=acks)
            assert response.status_code == 200, response.text
            poll = await http.get("/socket.io/", params=query)
            assert poll.status_code == 200 and f"40{ns}," in poll.text, poll.text


# -- connect attempts with bad tokens, per address ---------------------------------------------


async def test_bad_tokens_are_rate_limited_per_address_and_recover_after_the_window(
    own_server: Server,
) -> None:
    own_server.env.update(CONNECT_FAILURE_LIMIT="3", CONNECT_FAILURE_WINDOW="2s")
    own_server.start()
    channel = await own_server.subscribe("user", user_id=unique("usr"))
    ns = f"/channels/{channel['channel_id']}"
    good = json.dumps({"token": channel["channel_token"]})
    async with bystander(own_server), raw(own_server) as conn:
        for _ in range(3):
            assert await conn.refusal(ns, '{"token":"guess"}') == "invalid_token"
        # Blocked: refused before the token is looked at, even the right one, from any
        # connection of this address.
        assert await conn.refusal(ns, good) == "rate_limited"
        assert await conn.refusal("/channels/chan_nothere", '{"token":"x"}') == "rate_limited"
        async with raw(own_server) as other:
            assert await other.refusal(ns, good) == "rate_limited"
        # ... until the failures age out.
        deadline = time.monotonic() + WAIT
        while (code := await conn.refusal(ns, '{"token":"guess"}')) == "rate_limited":
            assert time.monotonic() < deadline, "still rate limited"
            await asyncio.sleep(0.2)
        assert code == "invalid_token"
        async with raw(own_server) as later:
            while True:
                await later.send(f"40{ns},{good}")
                frame = await later.until("4")
                if frame.startswith(f"40{ns},"):
                    break
                assert "rate_limited" in frame and time.monotonic() < deadline, frame
                await asyncio.sleep(0.2)
    warnings = [
        line
        for line in own_server.log_path.read_text().splitlines()
        if "refusing connections from 127.0.0.1" in line
    ]
    assert len(warnings) >= 1
