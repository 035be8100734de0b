"""Fallback webhooks end to end: a real server, the official JS client confirming some events
and not others, and a real receiver verifying every signature with `standardwebhooks`.

Deadlines cannot be shorter than 10 s (the API's minimum), so each test waits them out once.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from claims_realtime.models.webhook_secrets import new_sealing_key
from tests import services
from tests.helpers import unique
from tests.programs import run_js_client
from tests.server import CLI, Server
from tests.webhook_receiver import Receiver, running_receiver

pytestmark = [pytest.mark.integration]

AFTER = 10
#: Past the deadline: the dispatcher's poll (0.2 s here) and the confirmations' flush.
SLACK = 8.0
ENV = {"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_POLL_INTERVAL": "0.2"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as found:
        yield found


@pytest.fixture
def webhook_server(tmp_path: Path, postgres_url: str | None) -> Iterator[Server]:
    env = dict(ENV)
    if postgres_url:
        env["DATABASE_URL"] = postgres_url
    server = Server(tmp_path / "server", **env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def subscribe_with_fallback(
    server: Server, receiver: Receiver, user: str, **fallback: Any
) -> dict[str, Any]:
    channel = await server.subscribe(
        "user", user_id=user, fallback={"url": receiver.url, "after_seconds": AFTER, **fallback}
    )
    receiver.secrets[channel["channel_id"]] = channel["fallback"]["secret"]
    return channel


async def publish(server: Server, user: str, count: int) -> None:
    for n in range(count):
        await server.publish(
            event_type="claim_approved",
            claim_id=unique("clm"),
            organisation_id="org_fb",
            user_id=user,
            data={"n": n},
        )


async def wait_for(receiver: Receiver, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.requests) < count:
        assert time.monotonic() < deadline, f"{len(receiver.requests)} webhooks, not {count}"
        await asyncio.sleep(0.05)


async def fallback_of(server: Server, channel_id: str) -> dict[str, Any]:
    async with server.client() as http:
        response = await http.get(f"/api/v1/realtime-subscriptions/{channel_id}/fallback")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.node
async def test_exactly_what_the_js_client_did_not_confirm_arrives_signed_once_after_the_deadline(
    webhook_server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    user = unique("usr")
    channel = await subscribe_with_fallback(webhook_server, receiver, user)
    channel_id = channel["channel_id"]
    async with run_js_client(tmp_path, channel, transports=["websocket"], ack_upto=2) as js:
        await js.expect("recovery")
        published_at = time.monotonic()
        await publish(webhook_server, user, 4)
        received = await js.events(4)
        assert [event["sequence"] for event in received] == [1, 2, 3, 4]

        await wait_for(receiver, 2, AFTER + SLACK)
        assert time.monotonic() - published_at >= AFTER, "not before the deadline"
        assert receiver.sequences() == [3, 4]
        assert [r["payload"]["event"] for r in receiver.requests] == received[2:]
        assert [r["id"] for r in receiver.requests] == [f"{channel_id}.3", f"{channel_id}.4"]

        await asyncio.sleep(2)  # several more polls: nothing is sent twice, all written back
        assert receiver.sequences() == [3, 4]
        state = await fallback_of(webhook_server, channel_id)
        assert (state["sent"], state["pending"], state["last_status"]) == (2, 0, 204)

    async with webhook_server.client() as http:
        scraped = (await http.get("/metrics")).text
    assert 'claims_realtime_webhooks_total{outcome="delivered"} 2.0' in scraped


async def test_a_retry_that_was_due_when_the_server_was_killed_is_sent_after_restart(
    webhook_server: Server, receiver: Receiver
) -> None:
    user = unique("usr")
    channel = await subscribe_with_fallback(webhook_server, receiver, user)
    await publish(webhook_server, user, 3)
    receiver.answers = [503]  # the first attempt fails: a retry is scheduled
    await wait_for(receiver, 1, AFTER + SLACK)
    await asyncio.sleep(1)  # the retry's time is written back at the next poll
    webhook_server.stop(kill=True)
    webhook_server.restart()
    await wait_for(receiver, 4, 30)
    assert receiver.sequences() == [1, 1, 2, 3]
    # What was sent is written back at the dispatcher's next poll.
    deadline = time.monotonic() + 5
    while (state := await fallback_of(webhook_server, channel["channel_id"]))["sent"] < 3:
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.1)
    assert (state["sent"], state["failed"], state["pending"]) == (3, 0, 0)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two processes sharing one sealing key, as every process of a deployment must."""
    with (
        services.migrated_database("crt_webhooks") as url,
        services.server_pair(tmp_path, url, WEBHOOK_SECRET_KEY=new_sealing_key(), **ENV) as pair,
    ):
        yield pair


@pytest.mark.scaleout
async def test_two_processes_send_each_webhook_once_and_in_order(
    pair: tuple[Server, Server], receiver: Receiver
) -> None:
    users = [unique("usr") for _ in range(6)]
    channels = [
        await subscribe_with_fallback(pair[i % 2], receiver, user) for i, user in enumerate(users)
    ]
    for i, user in enumerate(users):
        await publish(pair[(i + 1) % 2], user, 4)
    await wait_for(receiver, 24, AFTER + SLACK + 5)
    await asyncio.sleep(2)
    for channel in channels:
        assert receiver.sequences(channel["channel_id"]) == [1, 2, 3, 4]
    assert receiver.overlapping == 0


@pytest.fixture
def strangers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two processes that each generated a sealing key of their own (no WEBHOOK_SECRET_KEY,
    a DATA_DIR each): a misconfiguration, which must cost no secret."""
    with (
        services.migrated_database("crt_webhooks") as url,
        services.server_pair(tmp_path, url, WEBHOOK_SECRET_KEY="", **ENV) as pair,
    ):
        yield pair


@pytest.mark.scaleout
async def test_a_process_with_another_sealing_key_neither_seals_nor_sends(
    strangers: tuple[Server, Server], receiver: Receiver
) -> None:
    first, stray = strangers  # `first` started first: its key is the database's
    user = unique("usr")
    channel = await subscribe_with_fallback(first, receiver, user)
    async with stray.client() as http:
        refused = await http.put(
            f"/api/v1/realtime-subscriptions/{channel['channel_id']}/fallback",
            json={"url": receiver.url, "after_seconds": AFTER},
        )
    assert refused.status_code == 503, refused.text
    assert refused.json()["checks"] == {"webhook_secret_key": "mismatch"}
    await publish(stray, user, 3)
    await wait_for(receiver, 3, AFTER + SLACK)
    await asyncio.sleep(1)
    assert receiver.sequences() == [1, 2, 3], "sent by the process that can read the secret"


async def test_resealing_after_a_key_rotation_lets_the_old_key_go(
    tmp_path: Path, receiver: Receiver
) -> None:
    """`claims-realtime reseal-webhook-secrets` under `new,old`: a server given `new` alone
    then agrees with the database's key check, sets fallbacks and opens the secrets."""
    old, new = new_sealing_key(), new_sealing_key()
    server = Server(tmp_path / "server", **{**ENV, "WEBHOOK_SECRET_KEY": old})
    server.start()
    try:
        channel = await subscribe_with_fallback(server, receiver, unique("usr"))
    finally:
        server.stop()

    resealed = subprocess.run(
        [CLI, "reseal-webhook-secrets"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**server.env, "WEBHOOK_SECRET_KEY": f"{new},{old}"},
    )
    assert resealed.returncode == 0, resealed.stderr
    assert "resealed 1 webhook secret(s)" in resealed.stdout

    server.env["WEBHOOK_SECRET_KEY"] = new
    server.start()
    try:
        state = await fallback_of(server, channel["channel_id"])
        assert state["url"] == receiver.url
        async with server.client() as http:
            other = await server.subscribe("user", user_id=unique("usr"))
            replaced = await http.put(
                f"/api/v1/realtime-subscriptions/{other['channel_id']}/fallback",
                json={"url": receiver.url, "after_seconds": AFTER},
            )
        assert replaced.status_code == 200, replaced.text
    finally:
        server.stop()
