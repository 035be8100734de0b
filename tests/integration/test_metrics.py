"""`GET /metrics` on a real server: every metric moves by exactly what the clients did.

Counters, histograms and the socket gauge belong to the server process, and the tests of a
module run one at a time against it: a scrape before and after tells what each test caused.
Channels by status are counted in the database, which other test modules share on
PostgreSQL, so they are checked against the API's own listing instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets.asyncio.client
from prometheus_client.parser import text_string_to_metric_families

from claims_realtime.models.db import migrate
from claims_realtime.realtime.client import ChannelClient
from tests import services
from tests.helpers import assert_problem, unique
from tests.integration.test_delivery import (
    channel_state,
    claim_event,
    events,
    eventually_status,
    nothing_more,
    recovery,
)
from tests.integration.test_socket_fuzz import raw
from tests.server import Server

#: (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

METRICS = (
    "claims_realtime_connected_sockets",
    "claims_realtime_channels",
    "claims_realtime_events_ingested",
    "claims_realtime_deliveries",
    "claims_realtime_replays",
    "claims_realtime_replay_size_events",
    "claims_realtime_unrecovered_resumes",
    "claims_realtime_ingest_latency_seconds",
    "claims_realtime_delivery_latency_seconds",
    "claims_realtime_slow_consumer_drops",
    "claims_realtime_python_allocated_blocks",
    "claims_realtime_python_blocks_after_full_collection",
    "claims_realtime_python_full_collections",
    "claims_realtime_python_gc_pause_seconds",
    "claims_realtime_engineio_sessions",
)
#: Sampled from the process, not counted from what clients do: they move on their own.
SAMPLED = (
    "claims_realtime_python_allocated_blocks",
    "claims_realtime_python_blocks_after_full_collection",
    "claims_realtime_python_full_collections_total",
    "claims_realtime_python_gc_pause_seconds_count",
    "claims_realtime_python_gc_pause_seconds_sum",
    "claims_realtime_engineio_sessions",
)


async def scrape(server: Server) -> Samples:
    async with server.client() as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = list(text_string_to_metric_families(response.text))
    for family in families:
        if family.name.startswith("claims_realtime_"):
            assert family.documentation, f"{family.name} has no help text"
    assert set(METRICS) <= {family.name for family in families}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def moved(before: Samples, after: Samples) -> dict[str, float]:
    """What changed between two scrapes, by readable sample name (label values in braces)."""
    changes = {}
    for key, value in after.items():
        if key[0].endswith("_created") or key[0] in SAMPLED:
            continue
        delta = value - before.get(key, 0.0)
        if delta and key[0].startswith("claims_realtime_") and "_bucket" not in key[0]:
            name, labels = key
            label_text = ",".join(f"{k}={v}" for k, v in labels)
            changes[f"{name}{{{label_text}}}" if labels else name] = delta
    return changes


def without_sums(changes: dict[str, float]) -> dict[str, float]:
    """Histogram _sum values are durations: whether they moved is checked, not by how much."""
    return {name: delta for name, delta in changes.items() if not name.endswith("_sum")}


async def channel_totals(http: httpx.AsyncClient) -> dict[str, int]:
    totals = {}
    for status in ("connected", "disconnected", "closed"):
        response = await http.get("/api/v1/realtime-subscriptions", params={"status": status})
        assert response.status_code == 200, response.text
        totals[status] = int(response.json()["pagination"]["total"])
    return totals


async def test_metrics_move_by_exactly_what_clients_did(server: Server) -> None:
    org = unique("org")
    channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    url, token = channel["websocket_url"], channel["channel_token"]
    start = await scrape(server)

    async with ChannelClient(url, token) as client:
        assert (await recovery(client)).replayed == 0  # a fresh channel: nothing to replay
        first = claim_event(org, event_id=unique("evt"))
        await server.publish(**first)
        batch = await server.publish_batch([claim_event(org), claim_event(org)])
        assert batch.status_code == 202, batch.text
        assert (await server.publish(**first))["duplicate"] is True
        assert [e["sequence"] for e in await events(client, 3)] == [1, 2, 3]
        await nothing_more(client)
        live = await scrape(server)

    changes = moved(start, live)
    assert without_sums(changes) == {
        "claims_realtime_connected_sockets": 1,
        "claims_realtime_events_ingested_total{outcome=recorded}": 3,
        "claims_realtime_events_ingested_total{outcome=duplicate}": 1,
        "claims_realtime_deliveries_total": 3,
        # Three requests; two of them committed new events for a connected socket.
        "claims_realtime_ingest_latency_seconds_count": 3,
        "claims_realtime_delivery_latency_seconds_count": 2,
    }, changes
    assert changes.keys() >= {
        "claims_realtime_ingest_latency_seconds_sum",
        "claims_realtime_delivery_latency_seconds_sum",
    }

    await eventually_status(server, channel["channel_id"], "disconnected")
    await server.publish(**claim_event(org))  # missed: nobody is connected
    async with ChannelClient(url, token, last_sequence=1) as client:
        resumed = await recovery(client)
        assert (resumed.recovered, resumed.replayed) == (True, 3)
        assert [e["sequence"] for e in await events(client, 3)] == [2, 3, 4]
        replayed = await scrape(server)

    changes = moved(live, replayed)
    # One socket open, as at `live`: no change. No delivery latency: nobody was connected.
    assert without_sums(changes) == {
        "claims_realtime_events_ingested_total{outcome=recorded}": 1,
        "claims_realtime_ingest_latency_seconds_count": 1,
        "claims_realtime_replays_total": 1,
        "claims_realtime_replay_size_events_count": 1,
        "claims_realtime_deliveries_total": 3,
    }, changes
    assert changes["claims_realtime_replay_size_events_sum"] == 3
    # A replay of 3 events falls in the buckets from 10 up.
    bucket = ("claims_realtime_replay_size_events_bucket", (("le", "1.0"),))
    assert replayed[bucket] == live[bucket]
    bucket = ("claims_realtime_replay_size_events_bucket", (("le", "10.0"),))
    assert replayed[bucket] == live[bucket] + 1
    await eventually_status(server, channel["channel_id"], "disconnected")
    assert moved(start, await scrape(server)).get("claims_realtime_connected_sockets") is None
    assert replayed[("claims_realtime_slow_consumer_drops_total", ())] == 0


async def test_channels_by_status_are_counted_in_the_database(server: Server) -> None:
    org = unique("org")
    connected, disconnected, closed = [
        await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
        for _ in range(3)
    ]
    async with ChannelClient(disconnected["websocket_url"], disconnected["channel_token"]) as c:
        await recovery(c)
    await eventually_status(server, disconnected["channel_id"], "disconnected")
    async with server.client() as http:
        response = await http.delete(f"/api/v1/realtime-subscriptions/{closed['channel_id']}")
        assert response.status_code == 200, response.text
        # The listing and the gauge read the same table: compare them where nothing else
        # changed it in between (another module's server may be reaping on PostgreSQL).
        for _ in range(20):
            totals = await channel_totals(http)
            samples = await scrape(server)
            if totals == await channel_totals(http):
                break
        gauge = {
            status: samples[("claims_realtime_channels", (("status", status),))]
            for status in totals
        }
    assert gauge == totals
    # Each status has at least this test's channel of it.
    assert min(totals.values()) >= 1
    assert (await channel_state(server, connected["channel_id"]))["status"] == "connected"


async def test_a_resume_past_truncated_history_is_counted_unrecovered(own_server: Server) -> None:
    own_server.env["HISTORY_MAX_EVENTS"] = "2"
    own_server.start()
    org = unique("org")
    channel = await own_server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    response = await own_server.publish_batch([claim_event(org) for _ in range(4)])
    assert response.status_code == 202, response.text
    before = await scrape(own_server)
    async with ChannelClient(
        channel["websocket_url"], channel["channel_token"], last_sequence=0
    ) as client:
        resumed = await recovery(client)
        assert (resumed.recovered, resumed.unavailable, resumed.replayed) == (False, 2, 2)
        assert [e["sequence"] for e in await events(client, 2)] == [3, 4]
        after = await scrape(own_server)
    changes = moved(before, after)
    assert without_sums(changes) == {
        "claims_realtime_connected_sockets": 1,
        "claims_realtime_unrecovered_resumes_total": 1,
        "claims_realtime_replays_total": 1,
        "claims_realtime_replay_size_events_count": 1,
        "claims_realtime_deliveries_total": 2,
    }, changes


async def test_metrics_answers_get_and_head_only(server: Server) -> None:
    async with server.client() as http:
        head = await http.head("/metrics")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0
        refused = await http.post("/metrics", content=b"x")
    assert_problem(refused, 405)
    assert refused.headers["allow"] == "GET, HEAD"


async def test_a_slow_consumer_drop_is_counted(own_server: Server) -> None:
    """A raw websocket that stops reading (see test_slow_consumer.py) is dropped: counted."""
    own_server.env["MAX_SOCKET_BACKLOG"] = "100"
    own_server.start()
    org = unique("org")
    channel = await own_server.subscribe("organisation", organisation_id=org, user_id="usr_c")
    before = await scrape(own_server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", own_server.port))
    sock.setblocking(False)
    async with websockets.asyncio.client.connect(
        f"ws://127.0.0.1:{own_server.port}/socket.io/?EIO=4&transport=websocket",
        sock=sock,
        max_queue=1,  # stops reading the TCP stream once one frame waits unread
        ping_interval=None,
    ) as ws:
        await ws.recv()  # Engine.IO open
        namespace = f"/channels/{channel['channel_id']}"
        await ws.send(f"40{namespace},{json.dumps({'token': channel['channel_token']})}")
        # It never reads again. Publish bulky events until the server gives up on it.
        async with own_server.client() as http:
            for _ in range(80):
                response = await own_server.publish_batch(
                    [claim_event(org, data={"note": "x" * 1500}) for _ in range(50)]
                )
                assert response.status_code == 202, response.text
                state = await http.get(f"/api/v1/realtime-subscriptions/{channel['channel_id']}")
                if state.json()["status"] == "disconnected":
                    break
        changes = moved(before, await scrape(own_server))
    assert changes["claims_realtime_slow_consumer_drops_total"] == 1, changes
    assert "claims_realtime_connected_sockets" not in changes, changes  # attached, then dropped


@pytest.mark.scaleout
async def test_every_worker_reports_the_totals_of_all_workers(tmp_path: Path) -> None:
    """`serve --workers 2`: whichever process a scrape reaches, it reports both."""
    services.require_postgres()
    services.require_redis()
    database = await services.create_database("crt_metrics")
    server = Server(
        tmp_path / "w", "--workers", "2", DATABASE_URL=database, REDIS_URL=services.REDIS_URL
    )
    clients: list[ChannelClient] = []
    try:
        await migrate(database)
        server.start()
        org = unique("org")
        # Connect until both processes hold sockets (each connection lands on either).
        while len(clients) < 20 and (len(clients) < 2 or await _nodes_with_sockets(database) < 2):
            channel = await server.subscribe("organisation", organisation_id=org, user_id="usr_c")
            client = ChannelClient(
                channel["websocket_url"], channel["channel_token"], transports=["websocket"]
            )
            await client.connect()
            clients.append(client)
            await recovery(client)
        assert await _nodes_with_sockets(database) == 2
        for _ in range(3):
            await server.publish(**claim_event(org))
        for client in clients:
            assert [e["sequence"] for e in await events(client, 3)] == [1, 2, 3]
        for _ in range(6):  # scrapes land on either process
            samples = await scrape(server)
            assert samples[("claims_realtime_connected_sockets", ())] == len(clients)
            recorded = ("claims_realtime_events_ingested_total", (("outcome", "recorded"),))
            assert samples[recorded] == 3
            assert samples[("claims_realtime_deliveries_total", ())] == 3 * len(clients)
            assert samples[("claims_realtime_channels", (("status", "connected"),))] == len(clients)
    finally:
        for client in clients:
            await client.close()
        server.stop()
        await services.drop_database(database)


async def _nodes_with_sockets(database: str) -> int:
    connection = await asyncpg.connect(database)
    try:
        count = await connection.fetchval(
            "SELECT count(DISTINCT node_id) FROM presence WHERE sockets > 0"
        )
    finally:
        await connection.close()
    return int(count)


async def test_live_python_memory_is_exported(server: Server) -> None:
    samples = await scrape(server)
    blocks = samples[("claims_realtime_python_allocated_blocks", ())]
    assert 100_000 < blocks < 100_000_000  # a Python server holds hundreds of thousands


async def test_sigusr2_runs_a_full_collection_and_exports_what_it_left(server: Server) -> None:
    """The soak's leak check: live memory measured right after a full collection, on
    request (the interpreter's own full collections come only every few minutes)."""
    before = await scrape(server)
    count = before[("claims_realtime_python_full_collections_total", ())]
    assert server.process is not None
    server.process.send_signal(signal.SIGUSR2)
    deadline = asyncio.get_running_loop().time() + 10
    while (samples := await scrape(server))[
        ("claims_realtime_python_full_collections_total", ())
    ] < count + 1:
        assert asyncio.get_running_loop().time() < deadline, "no full collection on SIGUSR2"
        await asyncio.sleep(0.05)
    after = samples[("claims_realtime_python_blocks_after_full_collection", ())]
    # What the collection left: live data, no more than the allocator holds right after.
    assert 100_000 < after <= samples[("claims_realtime_python_allocated_blocks", ())] + 50_000
    # ...and how long it stopped the process: one more full collection timed, taking time.
    full = (("generation", "2"),)
    paused = samples[("claims_realtime_python_gc_pause_seconds_count", full)]
    assert paused >= before[("claims_realtime_python_gc_pause_seconds_count", full)] + 1
    assert (
        samples[("claims_realtime_python_gc_pause_seconds_sum", full)]
        > before[("claims_realtime_python_gc_pause_seconds_sum", full)]
    )
    assert server.process.poll() is None  # handled, not the default action (terminate)


async def test_dropped_connections_are_released_at_once(server: Server) -> None:
    """A websocket that goes away frees its Engine.IO session there and then (when its
    request ends, as python-engineio does; our lean websocket loop must end it), not at
    python-engineio's background sweep, which visits one session per ping_timeout / sessions."""

    async def sessions() -> float:
        return (await scrape(server))[("claims_realtime_engineio_sessions", ())]

    idle = await sessions()
    channel = await server.subscribe("user", user_id=unique("usr"))
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(20):
            connection = await stack.enter_async_context(raw(server))
            await connection.join(channel)
        assert await sessions() == idle + 20
    # All 20 websockets are closed now (the client's side, as a browser tab closing would).
    deadline = asyncio.get_running_loop().time() + 2
    while (held := await sessions()) > idle:
        assert asyncio.get_running_loop().time() < deadline, f"{held - idle} sessions held"
        await asyncio.sleep(0.1)
