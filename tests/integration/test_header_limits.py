"""Bounds on request heads (MAX_HEADER_BYTES, MAX_HEADER_COUNT), against a real server over
raw sockets: a head over either bound gets a 431 problem+json and a closed connection, for
plain requests and websocket upgrades alike; bodies never count; a burst of endless headers
costs the server no memory."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claims_realtime.settings import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_COUNT
from tests.helpers import PUBLISHER_KEY, unique
from tests.server import Server

TIMEOUT = 10.0
MB = 1024 * 1024
PLAIN = b"GET /api/v1/realtime-subscriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
UPGRADE = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
KINDS = {"plain": (PLAIN, 200), "websocket": (UPGRADE, 101)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[Server]:
    env = {"DATABASE_URL": postgres_url} if postgres_url else {}
    srv = Server(tmp_path_factory.mktemp("headers"), **env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def head(start: bytes, size: int | None = None, fields: int = 0) -> bytes:
    """`start` plus `fields` small header fields, then padding fields to `size` bytes in
    all, blank line included. No field over 4,000 bytes: websockets, which handles the
    upgrade after us, refuses a header line over 8 KiB."""
    data = start + b"".join(b"X-%d: v\r\n" % n for n in range(fields))
    if size is not None:
        room = size - len(data) - 2
        count = -(-room // 4000)
        values = room - sum(len(b"X-Pad-%d: \r\n" % n) for n in range(count))
        for n in range(count):
            share = values // count + (1 if n < values % count else 0)
            data += b"X-Pad-%d: %s\r\n" % (n, b"p" * share)
    data += b"\r\n"
    assert size is None or len(data) == size
    return data


def fields_in(start: bytes) -> int:
    return start.count(b"\r\n") - 1


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers, body (by Content-Length; none for a 101)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed within the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def exchange(server: Server, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        sock.sendall(data)
        return read_response(sock)


def assert_431(sock: socket.socket, bound: str, limit: int) -> None:
    status, headers, body = read_response(sock)
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["status"] == 431
    assert problem["title"] == "Request Header Fields Too Large"
    assert problem["type"] == "about:blank"
    assert f"{bound} limit of {limit}" in problem["detail"]
    assert sock.recv(65536) == b"", "the connection stays open after a 431"


def stream_endless_header(server: Server, start: bytes, total: int) -> tuple[int, bytes]:
    """Send `start` and one field going on for `total` bytes, 256 KiB at a time, until the
    server closes; then read what it answered. Returns (bytes sent, bytes received)."""
    sent = 0
    received = b""
    with connect(server) as sock:
        sock.sendall(start + b"X-Big: ")
        chunk = b"b" * (256 * 1024)
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass  # the server closed with our bytes unread: a reset may beat its 431
    return sent, received


@pytest.mark.parametrize("kind", KINDS)
def test_a_head_just_under_the_size_limit_is_served(server: Server, kind: str) -> None:
    start, ok = KINDS[kind]
    status, _, _ = exchange(server, head(start, DEFAULT_MAX_HEADER_BYTES))
    assert status == ok


@pytest.mark.parametrize("kind", KINDS)
def test_a_head_just_over_the_size_limit_is_a_431(server: Server, kind: str) -> None:
    start, _ = KINDS[kind]
    with connect(server) as sock:
        sock.sendall(head(start, DEFAULT_MAX_HEADER_BYTES + 1))
        assert_431(sock, "size", DEFAULT_MAX_HEADER_BYTES)


@pytest.mark.parametrize("kind", KINDS)
def test_the_header_count_limit_is_inclusive(server: Server, kind: str) -> None:
    start, ok = KINDS[kind]
    status, _, _ = exchange(server, head(start, fields=DEFAULT_MAX_HEADER_COUNT - fields_in(start)))
    assert status == ok
    with connect(server) as sock:
        sock.sendall(head(start, fields=DEFAULT_MAX_HEADER_COUNT + 1 - fields_in(start)))
        assert_431(sock, "count", DEFAULT_MAX_HEADER_COUNT)


@pytest.mark.parametrize("kind", KINDS)
def test_a_32_mb_header_is_refused_long_before_its_end(server: Server, kind: str) -> None:
    start, _ = KINDS[kind]
    sent, received = stream_endless_header(server, start, 32 * MB)
    assert sent < 32 * MB, "the server read a 32 MB header to its end"
    assert received == b"" or received.startswith(b"HTTP/1.1 431 ")


def test_a_big_body_after_small_headers_is_not_refused(server: Server) -> None:
    """Sent in one go, so that the server's first read holds the head and much of the body."""
    events = [
        {
            "event_id": unique(f"evt{n}"),
            "event_type": "comment_added",
            "claim_id": "clm_1",
            "organisation_id": "org_1",
            "user_id": "usr_1",
            "data": {"x": "a" * 16000},
        }
        for n in range(64)
    ]
    body = json.dumps({"events": events}).encode()
    assert len(body) > 15 * DEFAULT_MAX_HEADER_BYTES
    request = (
        b"POST /api/v1/claim-events/batch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Publisher-Key: %s\r\n"
        b"Content-Length: %d\r\n\r\n" % (PUBLISHER_KEY.encode(), len(body))
    )
    status, _, response = exchange(server, request + body)
    assert status == 202, response[:500]
    assert len(json.loads(response)["results"]) == 64


def memory_kib(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        line.split(":")[0]: int(line.split()[1])
        for line in lines
        if line.startswith(("VmRSS:", "VmHWM:"))
    }


def test_a_burst_of_endless_headers_leaves_memory_flat(server: Server) -> None:
    """8 connections at once, each sending a 64 MB header until the server closes it: its
    resident memory, and its peak, grow by less than 50 MB."""
    assert server.process is not None
    pid = server.process.pid
    before = memory_kib(pid)
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(stream_endless_header(server, PLAIN, 64 * MB))
        except Exception as exc:  # reported by the asserts below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    after = memory_kib(pid)

    assert len(results) == 8 and all(isinstance(r, tuple) for r in results), results
    for sent, received in results:
        assert sent < 64 * MB
        assert received == b"" or received.startswith(b"HTTP/1.1 431 ")
    assert after["VmRSS"] - before["VmRSS"] < 50 * 1024, (before, after)
    assert after["VmHWM"] - before["VmHWM"] < 50 * 1024, (before, after)
    status, _, _ = exchange(server, head(PLAIN))
    assert status == 200
