"""The newcomer's tour, with the real commands: subscribe (HTTP), `claims-realtime tail`,
`claims-realtime publish`; stop the tail, publish three more, tail again: exactly those three."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from typing import Any

from tests.helpers import PUBLISHER_KEY, ROOT, unique
from tests.server import CLI, Server, free_port

WAIT = 10.0


def run_publish(
    server: Server, *args: str, key: str = PUBLISHER_KEY
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "publish", "--url", server.base_url, "--key", key, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def publish_cli(server: Server, org: str, *extra: str, key: str = PUBLISHER_KEY) -> dict[str, Any]:
    """Publish one event of `org` with the CLI; its JSON answer plus `exit_code`."""
    result = run_publish(
        server, "--org", org, "--user", "usr_1", "--claim", unique("clm"), *extra, key=key
    )
    body = json.loads(result.stdout)
    body["exit_code"] = result.returncode
    return dict(body)


class Tail:
    """A running `claims-realtime tail`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        #: stderr lines other than recovery lines (retries, refusals, tracebacks).
        self.notes: list[str] = []

    @classmethod
    async def start(cls, websocket_url: str, token: str) -> Tail:
        process = await asyncio.create_subprocess_exec(
            CLI,
            "tail",
            websocket_url,
            "--token",
            token,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ},
        )
        return cls(process)

    async def recovery(self, wait: float = WAIT) -> dict[str, Any]:
        """The next `# recovery:` line; the other stderr lines are kept in `self.notes`."""
        assert self.process.stderr is not None
        while True:
            line = (await asyncio.wait_for(self.process.stderr.readline(), wait)).decode()
            assert line, f"tail exited before its recovery line; its stderr: {self.notes}"
            if line.startswith("# recovery: "):
                return dict(json.loads(line.removeprefix("# recovery: ")))
            self.notes.append(line)

    async def events(self, count: int) -> list[dict[str, Any]]:
        assert self.process.stdout is not None
        lines = [await asyncio.wait_for(self.process.stdout.readline(), WAIT) for _ in range(count)]
        return [json.loads(line) for line in lines]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            await asyncio.wait_for(self.process.wait(), WAIT)


async def test_tour_subscribe_tail_publish_stop_publish_resume(server):
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_coord99")

    tail = await Tail.start(channel["websocket_url"], channel["channel_token"])
    try:
        assert (await tail.recovery())["head_sequence"] == 0
        first = publish_cli(server, org, "--type", "claim_submitted", "--data", '{"amount": 120}')
        assert first["exit_code"] == 0 and first["channels"] == 1 and not first["duplicate"]
        (event,) = await tail.events(1)
        assert (event["sequence"], event["event_id"]) == (1, first["event_id"])
        assert event["data"] == {"amount": 120}
    finally:
        await tail.stop()

    missed = [publish_cli(server, org, "--type", "status_changed")["event_id"] for _ in range(3)]

    tail = await Tail.start(channel["websocket_url"], channel["channel_token"])
    try:
        recovery = await tail.recovery()
        assert (recovery["resumed_from"], recovery["replayed"], recovery["recovered"]) == (
            1,
            3,
            True,
        )
        replayed = await tail.events(3)
        assert [e["sequence"] for e in replayed] == [2, 3, 4]
        assert [e["event_id"] for e in replayed] == missed
    finally:
        await tail.stop()


async def test_publish_refuses_a_wrong_key_and_bad_data(server):
    refused = publish_cli(server, unique("org"), "--type", "claim_submitted", key="wrong")
    assert refused["exit_code"] == 1 and refused["status"] == 401
    result = run_publish(
        server,
        "--org",
        "o",
        "--user",
        "u",
        "--claim",
        "c",
        "--type",
        "claim_submitted",
        "--data",
        "{not json",
    )
    assert result.returncode != 0 and "--data is not JSON" in result.stderr


async def test_tail_stops_with_a_reason_when_the_channel_is_closed(server):
    channel = await server.subscribe("user", user_id=unique("usr"))
    async with server.client() as http:
        await http.delete(f"/api/v1/realtime-subscriptions/{channel['channel_id']}")
    tail = await Tail.start(channel["websocket_url"], channel["channel_token"])
    assert await asyncio.wait_for(tail.process.wait(), WAIT) == 1
    assert tail.process.stderr is not None
    assert b"channel_closed" in await tail.process.stderr.read()


async def test_tail_waits_for_a_server_that_is_not_up_yet(own_server):
    own_server.start()
    channel = await own_server.subscribe("user", user_id=unique("usr"))
    own_server.stop()
    tail = await Tail.start(channel["websocket_url"], channel["channel_token"])
    try:
        await asyncio.sleep(1.5)  # a few refused attempts
        own_server.start()  # same port, same data
        assert (await tail.recovery(wait=30))["head_sequence"] == 0
        assert any("cannot connect yet" in note for note in tail.notes), tail.notes
        event = await own_server.publish(
            event_type="claim_submitted",
            claim_id=unique("clm"),
            organisation_id=unique("org"),
            user_id=channel["user_id"],
        )
        (received,) = await tail.events(1)
        assert (received["sequence"], received["event_id"]) == (1, event["event_id"])
    finally:
        await tail.stop()


async def test_tail_gives_up_with_one_line_when_nothing_answers():
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        CLI,
        "tail",
        f"ws://127.0.0.1:{port}/channels/chan_x",
        "--token",
        "t",
        "--connect-timeout",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode == 1
    assert "cannot connect to ws://127.0.0.1" in stderr.decode()
    assert "Traceback" not in stderr.decode()
