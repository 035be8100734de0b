"""Engine.IO v4 conformance: the rules of the protocol's specification (the README of
github.com/socketio/engine.io-protocol) on handshake, heartbeat, upgrade, close and malformed
input, checked against a real server over HTTP long-polling and websocket, both spoken by
hand (tests.raw_engineio). One test per rule, the rule quoted in its docstring; a rule that
holds on both transports is one test run on each.

The server runs with a one-second heartbeat (PING_INTERVAL=1, PING_TIMEOUT=1), so the
heartbeat deadline is 2 s; MARGIN past a deadline covers a loaded machine. The Socket.IO v5
rules are in test_protocol_conformance_socketio.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers import unique
from tests.raw_engineio import (
    ENGINEIO_PATH,
    SESSIONS,
    SHORT_HEARTBEAT,
    SHORT_PING_INTERVAL,
    SHORT_PING_TIMEOUT,
    WAIT,
    Polling,
    Raw,
    Session,
    SessionEnded,
    decode_payload,
    logged_once,
    polling,
    raw,
    serving,
    websocket_url,
)
from tests.server import Server

INTERVAL = SHORT_PING_INTERVAL
TIMEOUT = SHORT_PING_TIMEOUT
#: Allowed past a protocol deadline.
MARGIN = 1.5
#: "At once": what an answer to the client's own request may take.
PROMPT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[Server]:
    with serving(
        tmp_path_factory.mktemp("eio-conformance"), postgres_url, **SHORT_HEARTBEAT
    ) as srv:
        yield srv


def assert_short_heartbeat(session: Session) -> None:
    """The server announces the heartbeat it was configured with (deadlines below use it)."""
    announced = (session.handshake["pingInterval"], session.handshake["pingTimeout"])
    assert announced == (INTERVAL * 1000, TIMEOUT * 1000), (
        f"handshake announces {announced} ms, the server was started with PING_INTERVAL="
        f"{INTERVAL:g} s and PING_TIMEOUT={TIMEOUT:g} s"
    )


def log_size(server: Server) -> int:
    return len(server.log_path.read_text(errors="replace"))


def log_since(server: Server, size: int) -> str:
    return server.log_path.read_text(errors="replace")[size:]


# -- handshake ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "upgrades"), [("polling", ["websocket"]), ("websocket", [])])
async def test_the_handshake_is_an_open_packet_with_the_session_parameters(
    server: Server, transport: str, upgrades: list[str]
) -> None:
    """Handshake: "If the server accepts the connection, then it MUST respond with an `open`
    packet with the following JSON-encoded payload": `sid`, `upgrades` ("the list of
    available transport upgrades": websocket from polling, none from websocket),
    `pingInterval` and `pingTimeout` (ms), `maxPayload` (bytes)."""
    async with SESSIONS[transport](server) as opened:
        handshake = opened.handshake
    assert isinstance(handshake["sid"], str) and handshake["sid"], handshake
    assert handshake["upgrades"] == upgrades, handshake
    assert_short_heartbeat(opened)
    assert isinstance(handshake["maxPayload"], int) and handshake["maxPayload"] > 0, handshake


@pytest.mark.parametrize(
    ("method", "query"),
    [
        pytest.param("GET", {"EIO": "3", "transport": "polling"}, id="eio-3"),
        pytest.param("GET", {"transport": "polling"}, id="eio-missing"),
        pytest.param("GET", {"EIO": "4", "transport": "flashsocket"}, id="unknown-transport"),
        pytest.param("GET", {"EIO": "4", "transport": "polling", "sid": "nope"}, id="unknown-sid"),
        pytest.param("POST", {"EIO": "4", "transport": "polling", "sid": "nope"}, id="post-sid"),
        pytest.param("POST", {"EIO": "4", "transport": "polling"}, id="post-without-sid"),
    ],
)
async def test_a_polling_request_with_a_bad_version_transport_or_sid_gets_400(
    server: Server, method: str, query: dict[str, str]
) -> None:
    """HTTP long-polling: "If a mandatory query parameter is missing, then the server MUST
    respond with an HTTP 400 error status"; "The server MUST return an HTTP 400 response if
    the session ID (from the `sid` query parameter) is not known." (Likewise a version other
    than 4 and a transport that is not one.)"""
    async with server.client() as http:
        response = await http.request(method, ENGINEIO_PATH, params=query, content="3")
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"EIO": "3", "transport": "websocket"}, id="eio-3"),
        pytest.param({"EIO": "", "transport": "websocket"}, id="eio-missing"),
        pytest.param({"EIO": "4", "transport": "websocket", "sid": "nope"}, id="unknown-sid"),
    ],
)
async def test_a_websocket_with_a_bad_version_or_sid_is_refused(
    server: Server, query: dict[str, str]
) -> None:
    """WebSocket: "If a mandatory query parameter is missing, then the server MUST close the
    WebSocket connection." (Likewise a version other than 4, or a `sid` that is no session.)"""
    await assert_websocket_refused(websocket_url(server, **query))


async def assert_websocket_refused(url: str) -> None:
    """The server refuses the websocket handshake, or closes the websocket before any frame."""
    try:
        async with connect(url, open_timeout=WAIT) as ws:
            with pytest.raises(ConnectionClosed):
                frame = await asyncio.wait_for(ws.recv(), PROMPT)
                pytest.fail(f"the server accepted the websocket and sent {frame!r}")
    except InvalidStatus as refused:
        assert 400 <= refused.response.status_code < 500, refused


async def pending_poll(session: Polling) -> None:
    """Long-poll (answering pings) until the server answers with a NOOP."""
    while True:
        frame = await session.packet()
        if frame == "6":
            return
        assert frame == "2", frame
        await session.send("3")


@contextlib.asynccontextmanager
async def upgraded(server: Server, session: Polling) -> AsyncIterator[Raw]:
    """Upgrade a long-polling session to websocket, checking each step of the spec's
    dance: a poll pending meanwhile, `2probe` -> `3probe`, the poll answered with `6`, `5`."""
    poll = asyncio.create_task(pending_poll(session))
    try:
        await asyncio.sleep(0.2)  # the poll reaches the server before the probe
        url = websocket_url(server, transport="websocket", sid=session.sid)
        async with connect(url, max_size=None, compression=None, open_timeout=WAIT) as ws:
            await ws.send("2probe")
            assert await asyncio.wait_for(ws.recv(), WAIT) == "3probe"
            try:
                await asyncio.wait_for(poll, PROMPT)
            except TimeoutError:
                pytest.fail("the pending long-poll was not answered with a NOOP")
            await ws.send("5")
            yield Raw(ws, session.handshake)
    finally:
        poll.cancel()
        with contextlib.suppress(BaseException):
            await poll


async def join_a_channel(server: Server, session: Session) -> None:
    """Connect the session to a channel's namespace: a session that joins none is closed at
    the heartbeat deadline whatever it answers (test_protocol_conformance_socketio.py)."""
    await session.join(await server.subscribe("user", user_id=unique("usr")))


async def next_ping(session: Session) -> None:
    """The server's next ping comes within the interval (and is answered)."""
    frame = await session.packet(INTERVAL + MARGIN)
    assert frame == "2", frame
    await session.send("3")


async def test_a_polling_session_upgrades_to_websocket(server: Server) -> None:
    """Upgrade: the client sends "a `ping` packet with the string `probe` in the payload";
    "The server MUST: send a `noop` packet to any pending `GET` request (if applicable) to
    cleanly close HTTP long-polling transport; respond with a `pong` packet with the string
    `probe` in the payload"; after the client's `upgrade` packet the session goes on over
    the websocket (heartbeat and messages)."""
    async with polling(server) as session:
        assert session.handshake["upgrades"] == ["websocket"]
        async with upgraded(server, session) as ws:
            await join_a_channel(server, ws)
            await next_ping(ws)


@pytest.mark.parametrize("first", ["websocket", "upgraded-polling"])
async def test_a_second_websocket_for_a_session_is_refused(server: Server, first: str) -> None:
    """WebSocket: "A client MUST NOT open more than one WebSocket connection per session.
    Should it happen, the server MUST close the WebSocket connection." The first one goes
    on."""
    async with contextlib.AsyncExitStack() as stack:
        if first == "websocket":
            conn: Raw = await stack.enter_async_context(raw(server))
        else:
            conn = await stack.enter_async_context(
                upgraded(server, await stack.enter_async_context(polling(server)))
            )
        await join_a_channel(server, conn)
        await assert_websocket_refused(websocket_url(server, transport="websocket", sid=conn.sid))
        await next_ping(conn)


async def test_a_polling_post_is_answered_200_ok(server: Server) -> None:
    """Sending data: "To indicate success, the server MUST return an HTTP 200 response, with
    the string `ok` in the response body." (python-engineio answers `OK`: the case is not
    checked.)"""
    async with polling(server) as session:
        response = await session.post("3")
    assert response.status_code == 200, response.text
    assert response.text.lower() == "ok", response.text


# -- heartbeat ---------------------------------------------------------------------------------


async def test_the_server_pings_every_ping_interval(server: Server, session: Session) -> None:
    """Heartbeat: "At a given interval (the `pingInterval` value sent in the handshake) the
    server sends a `ping` packet"."""
    assert_short_heartbeat(session)
    await join_a_channel(server, session)
    for _ in range(2):
        await next_ping(session)


async def test_a_client_that_answers_pings_stays_connected(
    server: Server, session: Session
) -> None:
    """Heartbeat: "the server sends a `ping` packet and the client has a few seconds (the
    `pingTimeout` value) to send a `pong` packet back": a client that does stays connected
    for as many intervals as it likes (here 4, twice the heartbeat deadline)."""
    assert_short_heartbeat(session)
    await join_a_channel(server, session)
    for _ in range(4):
        try:
            await next_ping(session)
        except SessionEnded:
            pytest.fail(f"the server ended a session that answered every ping ({session.sid})")
    await join_a_channel(server, session)


async def test_a_client_that_does_not_answer_is_closed_by_the_deadline(
    server: Server, session: Session
) -> None:
    """Heartbeat: "If the server does not receive a `pong` packet back, then it SHOULD
    consider that the connection is closed": by pingInterval + pingTimeout after the last
    sign of life. Over websocket the server closes the connection (TCP included); over
    long-polling the session ends (a CLOSE packet, or 400)."""
    assert_short_heartbeat(session)
    await join_a_channel(server, session)  # its last words
    await session.closed_by_server(INTERVAL + TIMEOUT + MARGIN)


# -- close -------------------------------------------------------------------------------------


async def test_a_close_packet_over_websocket_closes_it_at_once(server: Server) -> None:
    """Packet types: `close` is "Used to indicate that a transport can be closed": the
    server closes the websocket at once (not at the heartbeat deadline)."""
    async with raw(server) as conn:
        await conn.send("1")
        await conn.closed_by_server(PROMPT)


async def test_a_close_packet_over_polling_answers_the_pending_poll_and_ends_the_session(
    server: Server,
) -> None:
    """Packet types: `close` is "Used to indicate that a transport can be closed": a
    long-polling client's CLOSE answers its pending GET at once (with a NOOP, as the
    reference server does, or a CLOSE) and ends the session: "The server MUST return an
    HTTP 400 response if the session ID (from the `sid` query parameter) is not known"."""
    async with polling(server) as session:
        poll = asyncio.create_task(session.get())
        try:
            await asyncio.sleep(0.2)  # the poll reaches the server first
            await session.post("1")
            try:
                answered = await asyncio.wait_for(poll, PROMPT)
            except TimeoutError:
                pytest.fail("the pending long-poll was not answered at once after CLOSE")
        finally:
            poll.cancel()
            with contextlib.suppress(BaseException):
                await poll
        assert answered.status_code == 200, answered.text
        assert {"6", "1"} & set(decode_payload(answered.text)), answered.text
        for request in (session.post("3", timeout=PROMPT), session.get(timeout=PROMPT)):
            assert (await request).status_code == 400, "the session outlived the client's CLOSE"


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param("x", id="not-a-packet-type"),
        pytest.param("7hello", id="unknown-packet-type"),
        pytest.param("", id="empty"),
    ],
)
async def test_an_undecodable_websocket_packet_closes_the_connection(
    server: Server, frame: str
) -> None:
    """Packet encoding: `<packet type>[<data>]`, the types being 0 to 6: a frame that is no
    such packet comes from a broken client, and the server closes the connection (logging
    it once)."""
    async with raw(server) as conn:
        await conn.send(frame, frame)
        await conn.closed_by_server(MARGIN)
    await logged_once(server, conn.sid)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("x", id="not-a-packet-type"),
        pytest.param("7hello", id="unknown-packet-type"),
        pytest.param("3\x1ex", id="garbage-after-a-pong"),
        pytest.param("b!!!not-base64", id="bad-base64"),
        pytest.param(b"4\xff\xfe", id="not-utf-8"),
    ],
)
async def test_an_undecodable_polling_payload_gets_400_and_ends_the_session(
    server: Server, body: str | bytes
) -> None:
    """Packet encoding (HTTP long-polling): `<packet type>[<data>]<separator>...`: a POST
    whose body is no such payload gets 400 and ends the session, as any broken client's
    input does; the server logs it once, without a traceback."""
    size = log_size(server)
    async with polling(server) as session:
        response = await session.post(body)
        assert response.status_code == 400, response.text
        assert (await session.get(timeout=PROMPT)).status_code == 400, "the session goes on"
    await logged_once(server, session.sid)
    assert "Traceback" not in log_since(server, size), log_since(server, size)[-3000:]


async def test_a_packet_over_max_payload_is_refused(server: Server, session: Session) -> None:
    """Handshake: `maxPayload` is "The maximum number of bytes per chunk": a websocket frame
    or a long-polling POST over it is refused (the websocket is closed; the POST gets 400)
    and the session ends."""
    too_long = "4" + "x" * session.handshake["maxPayload"]
    if isinstance(session, Polling):
        response = await session.post(too_long)
        assert response.status_code == 400, response.text
        assert (await session.get(timeout=PROMPT)).status_code == 400, "the session goes on"
    else:
        await session.send(too_long)
        await session.closed_by_server(MARGIN)
