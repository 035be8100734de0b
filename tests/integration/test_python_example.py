"""examples/python/subscriber.py, the Python example integrators copy, run as is against a real
server: it prints every event once, in order, resumes across a server restart, and exits with
the right code when the channel closes or the token is wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, unique
from tests.programs import run_program
from tests.server import Server

pytestmark = pytest.mark.integration

EXAMPLE = str(ROOT / "examples" / "python" / "subscriber.py")


def claim_event(**routing: str) -> dict[str, str]:
    return {"event_type": "claim_submitted", "claim_id": unique("clm"), **routing}


async def test_prints_each_event_and_exits_0_when_the_channel_closes(
    server: Server, tmp_path: Path
) -> None:
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id=unique("usr"))
    event = claim_event(organisation_id=org, user_id=unique("usr"))
    async with run_program(
        tmp_path, sys.executable, EXAMPLE, channel["websocket_url"], channel["channel_token"]
    ) as example:
        published = [await server.publish(**event) for _ in range(2)]
        printed = [await example.next_line(), await example.next_line()]
        assert [p and (p["sequence"], p["event_id"]) for p in printed] == [
            (1, published[0]["event_id"]),
            (2, published[1]["event_id"]),
        ], example.report()
        async with server.client() as http:
            response = await http.delete(f"/api/v1/realtime-subscriptions/{channel['channel_id']}")
        assert response.status_code == 200, response.text
        assert await example.finish() == 0, example.report()
    assert len(example.lines) == 2, example.report()
    assert "recovery: resumed from 0" in example.stderr_path.read_text()


async def test_exits_1_on_a_wrong_token(server: Server, tmp_path: Path) -> None:
    channel = await server.subscribe("user", user_id=unique("usr"))
    async with run_program(
        tmp_path, sys.executable, EXAMPLE, channel["websocket_url"], "wrong"
    ) as example:
        assert await example.finish() == 1, example.report()
    assert example.lines == []
    assert "invalid_token" in example.stderr_path.read_text()


async def test_resumes_across_a_server_restart_without_loss_or_repeat(
    own_server: Server, tmp_path: Path
) -> None:
    own_server.start()
    user = unique("usr")
    channel = await own_server.subscribe("user", user_id=user)
    event = claim_event(organisation_id=unique("org"), user_id=user)
    async with run_program(
        tmp_path, sys.executable, EXAMPLE, channel["websocket_url"], channel["channel_token"]
    ) as example:
        published = [await own_server.publish(**event) for _ in range(2)]
        assert [(await example.next_line() or {}).get("sequence") for _ in range(2)] == [1, 2]

        own_server.restart()  # same port and database: the client reconnects by itself
        published.append(await own_server.publish(**event))
        third = await example.next_line(timeout=20)  # bounded by the client's backoff
        assert third is not None and third["sequence"] == 3, example.report()

        async with own_server.client() as http:
            response = await http.delete(f"/api/v1/realtime-subscriptions/{channel['channel_id']}")
        assert response.status_code == 200, response.text
        assert await example.finish() == 0, example.report()
    assert [line["event_id"] for line in example.lines] == [e["event_id"] for e in published]
    assert "recovery: resumed from 2" in example.stderr_path.read_text(), example.report()
