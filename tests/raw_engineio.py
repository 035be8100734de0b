"""Engine.IO v4 sessions spoken by hand, over either transport, against a real server.

    Raw        a websocket session (`ws://host/socket.io/?EIO=4&transport=websocket`)
    Polling    an HTTP long-polling session (GET to receive, POST to send, `\\x1e` between
               packets)

Both offer the same calls (`send`, `packet`, `recv`, `until`, `closed_by_server`, `join`,
`refusal`, `alive`), so that a rule that holds on both transports is one test run twice.
Plus what reads the server's log back: `hostile_lines`, `logged_once`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import unique
from tests.server import Server

WAIT = 10.0
HOSTILE = "hostile or broken client"
#: Engine.IO's limit on what a client may send (realtime.server.MAX_CLIENT_PACKET_BYTES).
MAX_PACKET = 64 * 1024
#: A heartbeat short enough for tests to wait out (the server's PING_INTERVAL and
#: PING_TIMEOUT, in seconds), and the environment that sets it.
SHORT_PING_INTERVAL = 1.0
SHORT_PING_TIMEOUT = 1.0
SHORT_HEARTBEAT = {"PING_INTERVAL": "1", "PING_TIMEOUT": "1"}
#: Long-polling packets are joined with the record separator.
SEPARATOR = "\x1e"
ENGINEIO_PATH = "/socket.io/"


class SessionEnded(Exception):
    """The server ended the session: the websocket is closed, or a long-polling request with
    the session's id was refused (400)."""


class Session:
    """One Engine.IO v4 session: what both transports share. Subclasses move the packets."""

    transport = ""

    def __init__(self, handshake: dict[str, Any]) -> None:
        #: The OPEN packet's payload: sid, upgrades, pingInterval, pingTimeout, maxPayload.
        self.handshake = handshake
        #: The Engine.IO session id: what the server's log names the connection by.
        self.sid: str = handshake["sid"]
        #: When the OPEN packet arrived (time.monotonic()): heartbeat deadlines count from it.
        self.opened_at = time.monotonic()

    def age(self) -> float:
        """Seconds since the OPEN packet."""
        return time.monotonic() - self.opened_at

    async def send(self, *frames: str | bytes) -> None:
        """Send packets; stop quietly once the server has ended the session."""
        raise NotImplementedError

    async def packet(self, timeout: float = WAIT) -> str | bytes:
        """The server's next packet, pings included. SessionEnded once the session is over;
        TimeoutError when nothing came within `timeout` seconds."""
        raise NotImplementedError

    async def _ended(self, deadline: float) -> None:
        """Called once SessionEnded was seen, with the test's deadline (monotonic)."""

    async def recv(self) -> str | bytes:
        """The next packet that is not the server's ping (pings are answered)."""
        while True:
            frame = await self.packet()
            if frame == "2":  # the server's ping
                await self.send("3")
                continue
            return frame

    async def until(self, prefix: str) -> str:
        """The next text packet starting with `prefix` (others are skipped)."""
        while True:
            frame = await self.recv()
            if isinstance(frame, str) and frame.startswith(prefix):
                return frame

    async def closed_by_server(self, within: float = WAIT, *, pong: bool = False) -> None:
        """The server ends the session within `within` seconds (from now), whatever it sends
        before; pings are answered only with `pong`."""
        deadline = time.monotonic() + within
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                frame = await self.packet(remaining)
                if frame == "1" and self.transport == "polling":
                    return  # a CLOSE ends a long-polling session
                if frame == "2" and pong:
                    await self.send("3")
        except SessionEnded:
            await self._ended(deadline)
        except TimeoutError:
            pytest.fail(f"{self.transport} session {self.sid} is still open after {within:.1f} s")

    async def join(self, channel: dict[str, Any], **auth: Any) -> dict[str, Any]:
        """CONNECT to the channel's namespace with its token; the `recovery` message's
        payload, which the server sends first."""
        namespace = f"/channels/{channel['channel_id']}"
        payload = json.dumps({"token": channel["channel_token"], **auth})
        await self.send(f"40{namespace},{payload}")
        frame = await self.until("4")
        while not frame.startswith((f"40{namespace},", f"44{namespace},")):
            frame = await self.until("4")
        assert frame.startswith(f"40{namespace},"), frame
        recovery = await self.until(f'42{namespace},["recovery",')
        args = json.loads(recovery[len(f"42{namespace},") :])
        return dict(args[1])

    async def refusal(self, namespace: str, auth: str | None) -> str:
        """CONNECT with `auth` (raw JSON text, or none); the refusal's code."""
        await self.send(f"40{namespace}," + (auth or "") if auth is not None else f"40{namespace}")
        frame = await self.until("44")
        body = json.loads(frame[frame.index("{") :])
        return str(body["data"]["code"])

    async def alive(self, probe: dict[str, Any]) -> None:
        """Still served: a CONNECT to a real channel on this session is accepted."""
        await self.join(probe)


class Raw(Session):
    """One Engine.IO v4 websocket connection, spoken by hand."""

    transport = "websocket"

    def __init__(self, ws: ClientConnection, handshake: dict[str, Any]) -> None:
        super().__init__(handshake)
        self.ws = ws

    async def send(self, *frames: str | bytes) -> None:
        for frame in frames:
            try:
                await self.ws.send(frame)
            except ConnectionClosed:
                return

    async def packet(self, timeout: float = WAIT) -> str | bytes:
        try:
            return await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as exc:
            raise SessionEnded(f"websocket {self.sid} closed") from exc

    async def _ended(self, deadline: float) -> None:
        # The closing handshake is done; the server must close the TCP connection too (the
        # client only would after its close_timeout, 10 s).
        try:
            await asyncio.wait_for(self.ws.wait_closed(), max(deadline - time.monotonic(), 0.01))
        except TimeoutError:
            pytest.fail(f"websocket {self.sid}: closing handshake done, TCP connection still open")


def websocket_url(server: Server, **query: str) -> str:
    """The Engine.IO URL with `query` (EIO=4 unless given; an empty value leaves it out)."""
    params = httpx.QueryParams(
        {key: value for key, value in {"EIO": "4", **query}.items() if value}
    )
    return server.base_url.replace("http://", "ws://") + f"{ENGINEIO_PATH}?{params}"


@contextlib.asynccontextmanager
async def raw(server: Server) -> AsyncIterator[Raw]:
    url = websocket_url(server, transport="websocket")
    async with connect(url, max_size=None, compression=None, open_timeout=WAIT) as ws:
        opened = await asyncio.wait_for(ws.recv(), WAIT)
        assert isinstance(opened, str) and opened.startswith("0"), opened
        yield Raw(ws, json.loads(opened[1:]))


def decode_payload(body: str) -> list[str | bytes]:
    """A long-polling payload's packets (`b<base64>` is a binary MESSAGE)."""
    return [
        base64.b64decode(part[1:]) if part.startswith("b") else part
        for part in body.split(SEPARATOR)
    ]


class Polling(Session):
    """One Engine.IO v4 long-polling session, spoken by hand (one GET at a time)."""

    transport = "polling"

    def __init__(self, http: httpx.AsyncClient, handshake: dict[str, Any]) -> None:
        super().__init__(handshake)
        self.http = http
        #: Packets received but not yet read (one GET may bring several).
        self.buffer: deque[str | bytes] = deque()

    @property
    def params(self) -> dict[str, str]:
        return {"EIO": "4", "transport": "polling", "sid": self.sid}

    async def get(self, timeout: float = WAIT) -> httpx.Response:
        """One long-poll GET (httpx.TimeoutException past `timeout`)."""
        return await self.http.get(ENGINEIO_PATH, params=self.params, timeout=timeout)

    async def post(self, body: str | bytes, timeout: float = WAIT) -> httpx.Response:
        return await self.http.post(
            ENGINEIO_PATH,
            params=self.params,
            content=body,
            headers={"Content-Type": "text/plain;charset=UTF-8"},
            timeout=timeout,
        )

    async def send(self, *frames: str | bytes) -> None:
        if not frames:
            return
        body = SEPARATOR.join(
            "b" + base64.b64encode(frame).decode() if isinstance(frame, bytes) else frame
            for frame in frames
        )
        await self.post(body)  # a 400: the session is over, which later reads will see

    async def packet(self, timeout: float = WAIT) -> str | bytes:
        deadline = time.monotonic() + timeout
        while not self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                response = await self.get(remaining)
            except httpx.TimeoutException:
                raise TimeoutError from None
            if response.status_code == 400:
                raise SessionEnded(f"polling session {self.sid}: {response.text}")
            assert response.status_code == 200, (response.status_code, response.text)
            if response.text:  # empty: the session was closed; the next GET says so
                self.buffer.extend(decode_payload(response.text))
        return self.buffer.popleft()


async def open_polling(http: httpx.AsyncClient) -> Polling:
    """Open a long-polling session on `http` (base_url: the server)."""
    opened = await http.get(ENGINEIO_PATH, params={"EIO": "4", "transport": "polling"})
    assert opened.status_code == 200, opened.text
    packets = decode_payload(opened.text)
    first = packets[0]
    assert isinstance(first, str) and first.startswith("0"), opened.text
    session = Polling(http, json.loads(first[1:]))
    session.buffer.extend(packets[1:])
    return session


@contextlib.asynccontextmanager
async def polling(server: Server) -> AsyncIterator[Polling]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http:
        yield await open_polling(http)


#: Opens a session of each transport (for parametrized tests).
SESSIONS = {"websocket": raw, "polling": polling}


# -- the server's log --------------------------------------------------------------------------


def hostile_lines(server: Server, sid: str) -> list[str]:
    return [
        line
        for line in server.log_path.read_text(errors="replace").splitlines()
        if HOSTILE in line and sid in line
    ]


async def logged_once(server: Server, sid: str) -> None:
    """The server logged this connection's misbehaviour, exactly once."""
    deadline = time.monotonic() + WAIT
    while not hostile_lines(server, sid):
        assert time.monotonic() < deadline, f"nothing logged about {sid}"
        await asyncio.sleep(0.05)
    lines = hostile_lines(server, sid)
    assert len(lines) == 1, lines


def claim_event(user: str, **overrides: Any) -> dict[str, Any]:
    return {
        "event_type": "status_changed",
        "claim_id": unique("clm"),
        "organisation_id": unique("org"),
        "user_id": user,
        **overrides,
    }


@contextlib.contextmanager
def serving(data_dir: Path, postgres_url: str | None, **env: str) -> Iterator[Server]:
    """A server for a module's fixture, on the run's PostgreSQL database when there is one."""
    if postgres_url:
        env["DATABASE_URL"] = postgres_url
    srv = Server(data_dir, **env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
