"""A client that stops reading: the server drops it past MAX_SOCKET_BACKLOG unsent packets
instead of queueing without bound, and the client later resumes by replay, losing nothing.

The slow consumer is a raw websocket speaking Engine.IO/Socket.IO by hand, with a small
receive buffer, that simply stops reading after its first events: the honest way to leave
a server writing into a connection nobody drains.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from claims_realtime.realtime.client import ChannelClient, Recovery
from tests.helpers import PUBLISHER_KEY, unique
from tests.server import Server

WAIT = 30.0
BACKLOG = 200
#: Bulky events fill the socket buffers between the server and the client sooner.
NOTE = "x" * 1500


def claim_event(org: str) -> dict[str, Any]:
    return {
        "event_type": "comment_added",
        "claim_id": unique("clm"),
        "organisation_id": org,
        "user_id": "usr_owner",
        "data": {"note": NOTE},
    }


async def raw_subscriber(server: Server, channel: dict[str, Any]) -> ClientConnection:
    """A Socket.IO client by hand: Engine.IO open, namespace CONNECT with the token."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    ws = await connect(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
        sock=sock,
        max_queue=1,  # stop reading the TCP stream as soon as one frame waits unread
        ping_interval=None,
    )
    opened = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(opened, str) and opened.startswith("0{"), opened
    namespace = f"/channels/{channel['channel_id']}"
    await ws.send(f"40{namespace},{json.dumps({'token': channel['channel_token']})}")
    return ws


async def next_frame(ws: ClientConnection) -> str:
    frame = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(frame, str)
    return frame


async def status_of(server: Server, channel_id: str) -> str:
    async with server.client() as http:
        response = await http.get(f"/api/v1/realtime-subscriptions/{channel_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def test_a_client_that_stops_reading_is_dropped_and_resumes_losing_nothing(
    own_server: Server,
) -> None:
    server = own_server
    server.env["MAX_SOCKET_BACKLOG"] = str(BACKLOG)
    server.start()
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    channel_id, namespace = channel["channel_id"], f"/channels/{channel['channel_id']}"

    ws = await raw_subscriber(server, channel)
    try:
        assert (await next_frame(ws)).startswith(f"40{namespace},")  # CONNECT accepted
        assert (await next_frame(ws)).startswith(f'42{namespace},["recovery",')
        # Read and confirm the first three events, as a client does...
        for sequence in (1, 2, 3):
            await server.publish(**claim_event(org))
            frame = await next_frame(ws)
            assert frame.startswith(f"42{namespace},{sequence}["), frame[:80]
            await ws.send(f"43{namespace},{sequence}[]")
        assert await status_of(server, channel_id) == "connected"

        # ...then stop reading. Publish until the server gives up on it.
        published, dropped = 3, False
        async with server.client() as http:
            while published < 4000 and not dropped:
                batch = [claim_event(org) for _ in range(50)]
                response = await http.post(
                    "/api/v1/claim-events/batch",
                    json={"events": batch},
                    headers={"X-Publisher-Key": PUBLISHER_KEY},
                )
                assert response.status_code == 202, response.text
                published += len(batch)
                dropped = await status_of(server, channel_id) == "disconnected"
        assert dropped, f"still connected after {published} events"
        assert "dropping connection" in server.log_path.read_text()

        # The server closed the connection: draining what the buffers held ends in a close,
        # and what had been queued beyond them was never sent (freed, not kept).
        frames = 0
        with pytest.raises(ConnectionClosed):
            while True:
                await next_frame(ws)
                frames += 1
        assert frames < published - 3
    finally:
        await ws.close()

    # Resuming from the server-side position: what the client confirmed (3), not what had
    # been queued for it. Then every later event exactly once, in order, paced through the
    # small backlog without being dropped again.
    async with ChannelClient(
        channel["websocket_url"], channel["channel_token"], reconnection_delay=0.2
    ) as client:
        recovery = await client.next(WAIT)
        assert isinstance(recovery, Recovery)
        assert (recovery.resumed_from, recovery.head_sequence) == (3, published)
        received: list[int] = []
        deadline = time.monotonic() + WAIT
        while len(received) < published - 3:
            message = await client.next(max(0.1, deadline - time.monotonic()))
            assert not isinstance(message, Recovery), "dropped again during the replay"
            received.append(message["sequence"])
        assert received == list(range(4, published + 1))
        await server.publish(**claim_event(org))
        live = await client.next(WAIT)
        assert not isinstance(live, Recovery) and live["sequence"] == published + 1
        assert len(client.recoveries) == 1
