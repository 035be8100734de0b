"""The bounded HTTP protocol (claims_realtime.http_protocol) over a fake transport: heads
over MAX_HEADER_BYTES or MAX_HEADER_COUNT get a 431 whichever way the reads cut them, bodies
never count, and what it relies on in uvicorn and httptools is still there."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from claims_realtime import cli, http_protocol
from claims_realtime.http_protocol import HeadBoundedProtocol, HttpProtocol
from claims_realtime.settings import Settings
from tests.fake_transport import FakeTransport

MAX_BYTES = 8 * 1024
MAX_COUNT = 16


class Connection:
    def __init__(self, protocol: HeadBoundedProtocol, transport: FakeTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        #: Bodies the application read, one per request.
        self.bodies: list[bytes] = []

    async def send(self, *reads: bytes) -> None:
        """Each argument is one read of the server's socket."""
        for data in reads:
            if self.transport.closing:
                return
            self.protocol.data_received(data)
            await settle()

    def status(self) -> int:
        return int(bytes(self.transport.written).split(b" ", 2)[1])

    def problem(self) -> dict[str, Any]:
        head, _, body = bytes(self.transport.written).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        assert b"\r\ncontent-type: application/problem+json\r\n" in head
        assert b"\r\nconnection: close\r\n" in head + b"\r\n"
        assert self.transport.closing
        problem = dict(json.loads(body))
        assert problem["status"] == 431 and problem["title"] == "Request Header Fields Too Large"
        return problem


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def connection() -> AsyncIterator[Connection]:
    holder: dict[str, Connection] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message["body"]
            if not message["more_body"]:
                break
        holder["connection"].bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = Config(app=app, http="claims_realtime.http_protocol:HttpProtocol", lifespan="off")
    config.load()
    protocol = config.http_protocol_class(  # type: ignore[call-arg]
        config, ServerState(), {}, asyncio.get_running_loop()
    )
    assert isinstance(protocol, HeadBoundedProtocol)
    protocol.max_head_bytes, protocol.max_header_count = MAX_BYTES, MAX_COUNT
    transport = FakeTransport()
    protocol.connection_made(transport)
    holder["connection"] = Connection(protocol, transport)
    yield holder["connection"]
    protocol.connection_lost(None)
    await settle()


def request(size: int, *, fields: int = 2, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    """A request line and `fields` header fields, `size` bytes in all (blank line included)."""
    line = method + b" /a HTTP/1.1\r\nHost: x\r\n" + extra
    fixed = len(line) + 2 + sum(len(b"X-%d: \r\n" % n) for n in range(fields - 1))
    assert size >= fixed, size
    pad = size - fixed
    head = line + b"".join(
        b"X-%d: %s\r\n" % (n, b"a" * (pad if n == 0 else 0)) for n in range(fields - 1)
    )
    head += b"\r\n"
    assert len(head) == size
    return head


def test_what_it_relies_on_is_still_in_uvicorn() -> None:
    assert uvicorn.__version__ == http_protocol.WRITTEN_FOR_UVICORN
    assert HttpProtocol is HeadBoundedProtocol
    for name in http_protocol.RELIED_ON:
        assert callable(getattr(HttpToolsProtocol, name, None)), name
    # httptools calls these only if the protocol has them: uvicorn must not define them.
    assert not hasattr(HttpToolsProtocol, "on_chunk_header")
    assert not hasattr(HttpToolsProtocol, "on_chunk_complete")


def test_without_what_it_relies_on_uvicorns_own_class_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    assert http_protocol._select() is HeadBoundedProtocol
    assert "written for uvicorn 0.54.0, running 0.99.0" in caplog.text
    monkeypatch.delattr(HttpToolsProtocol, "send_400_response")
    assert http_protocol._select() is HttpToolsProtocol
    assert "lacks send_400_response: serving without the bounds" in caplog.text


async def test_the_state_it_reads_is_uvicorns(connection: Connection) -> None:
    for name in http_protocol.RELIED_ON_STATE:
        assert hasattr(connection.protocol, name), name
    assert isinstance(connection.protocol.server_state.default_headers, list)


def test_serve_runs_uvicorn_with_this_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    fake_uvicorn = SimpleNamespace(run=lambda *args, **kwargs: calls.append(kwargs))
    args = argparse.Namespace(host="127.0.0.1", port=0, workers=1, graceful_timeout=1.0)
    cli._run_uvicorn(fake_uvicorn, args, Settings.from_env({}))
    config = Config(app=lambda *a: None, http=calls[0]["http"])
    config.load()
    assert config.http_protocol_class is HeadBoundedProtocol


def test_the_limits_come_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_HEADER_BYTES", "10000")
    monkeypatch.setenv("MAX_HEADER_COUNT", "20")
    http_protocol.limits.cache_clear()
    try:
        assert http_protocol.limits() == (10000, 20)
        monkeypatch.setenv("MAX_HEADER_COUNT", "30")
        assert http_protocol.limits() == (10000, 20)
    finally:
        http_protocol.limits.cache_clear()


async def test_a_head_of_exactly_the_limit_is_served(connection: Connection) -> None:
    await connection.send(request(MAX_BYTES))
    assert connection.status() == 200
    assert not connection.transport.closing


@pytest.mark.parametrize("read_size", [7, 100, 4096, MAX_BYTES + 1])
async def test_one_byte_over_is_a_431_naming_the_size_whatever_the_reads(
    connection: Connection, read_size: int
) -> None:
    data = request(MAX_BYTES + 1)
    await connection.send(*(data[i : i + read_size] for i in range(0, len(data), read_size)))
    problem = connection.problem()
    assert f"size limit of {MAX_BYTES} bytes" in problem["detail"]
    assert connection.bodies == []


async def test_an_endless_header_is_refused_at_the_limit(connection: Connection) -> None:
    """httptools holds an unfinished field: the reads stop being parsed at the bound."""
    await connection.send(b"GET / HTTP/1.1\r\nX-Big: ")
    fed = 0
    while not connection.transport.closing:
        await connection.send(b"a" * 1000)
        fed += 1000
        assert fed < 2 * MAX_BYTES
    assert "size limit" in connection.problem()["detail"]


async def test_an_endless_url_is_refused_at_the_limit(connection: Connection) -> None:
    await connection.send(b"GET /" + b"a" * 3 * MAX_BYTES)
    assert "size limit" in connection.problem()["detail"]


async def test_one_header_too_many_is_a_431_naming_the_count(connection: Connection) -> None:
    await connection.send(request(1000, fields=MAX_COUNT))
    assert connection.status() == 200
    connection.transport.written.clear()
    await connection.send(request(1000, fields=MAX_COUNT + 1))
    problem = connection.problem()
    assert f"count limit of {MAX_COUNT}." in problem["detail"]


async def test_a_small_head_then_a_large_body_in_one_read_is_served(
    connection: Connection,
) -> None:
    body = b"b" * (10 * MAX_BYTES)
    head = request(500, method=b"POST", extra=b"Content-Length: %d\r\n" % len(body))
    await connection.send(head + body)
    assert connection.status() == 200
    assert connection.bodies == [body]


async def test_a_chunked_body_never_counts_but_its_trailer_fields_do(
    connection: Connection,
) -> None:
    chunk = b"c" * (3 * MAX_BYTES)
    head = request(500, method=b"POST", extra=b"Transfer-Encoding: chunked\r\n")
    chunked = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    await connection.send(head + chunked + chunked, chunked + b"0\r\nX-T: 1\r\n\r\n")
    assert connection.status() == 200
    assert connection.bodies == [chunk * 3]

    connection.transport.written.clear()
    await connection.send(head + chunked + b"0\r\nX-Trailer: ")
    for _ in range(3):
        await connection.send(b"t" * MAX_BYTES)
    # The application is reading the body: a 431 cannot replace its response.
    assert connection.transport.closing and connection.transport.written == b""


async def test_a_head_that_starts_within_a_read_is_bounded_by_its_fields(
    connection: Connection,
) -> None:
    """Only reads that start in a head count as head bytes; pipelined heads that start
    after another request in the same read are bounded by the fields the parser hands over."""
    first = request(200)
    second = request(MAX_BYTES + 500)
    await connection.send(first + second[: MAX_BYTES - 300], second[MAX_BYTES - 300 :])
    assert connection.transport.closing
    response = bytes(connection.transport.written)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 431 Request Header Fields Too Large\r\n" in response


async def test_an_unparseable_request_still_gets_uvicorns_400(connection: Connection) -> None:
    await connection.send(b"NOT HTTP\r\n\r\n")
    assert connection.status() == 400
    assert connection.transport.closing
