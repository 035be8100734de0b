"""The benchmark's publisher blames the server only for what the server did.

A sweep step fails as "publisher fell behind" when events wait for a request slot because
the server has not answered the batches in flight. A late tick of the publisher's own timer
(its process descheduled, a GC pause) is the generator's hiccup: reported apart, and the
step's events are still measured from when they were sent. A batch whose kept-alive socket
the server closed under it is sent once more, counted. Times are on the machine's monotonic
clock, which the subscribers read too. Here the publisher posts to a stub HTTP server that
answers 202 after a chosen delay; SIGSTOP and SIGCONT freeze it the way a busy machine can.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.helpers import ROOT
from tests.integration.test_bench_smoke import require_node
from tools.bench.node import PUBLISHER, node_executable, run_publisher
from tools.bench.options import PUBLISHER_BACKLOG_LIMIT_MS

pytestmark = pytest.mark.integration


class _Stub(ThreadingHTTPServer):
    daemon_threads = True
    delay_s = 0.0
    events = 0
    #: Requests to drop (connection closed, no answer) when they come on a kept-alive socket.
    drops = 0
    sent_at: list[float]


class _Handler(BaseHTTPRequestHandler):
    server: _Stub
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
    # Headers and body go out in two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK, ~40 ms a request, and four slots were at times all busy.
    disable_nagle_algorithm = True
    served = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.served and self.server.drops:
            self.server.drops -= 1
            self.close_connection = True  # as a server timing out an idle socket: no answer
            return
        self.served += 1
        events = json.loads(body)["events"]
        self.server.events += len(events)
        self.server.sent_at.extend(event["data"]["sent_at"] for event in events)
        time.sleep(self.server.delay_s)
        body = b'{"results": []}'
        self.send_response(202)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def stub() -> Iterator[_Stub]:
    server = _Stub(("127.0.0.1", 0), _Handler)
    server.sent_at = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _config(stub: _Stub, *, duration_s: float, max_inflight: int = 4) -> dict[str, Any]:
    require_node()
    return {
        "mode": "rate",
        "url": f"http://127.0.0.1:{stub.server_address[1]}/events/batch",
        "keys": ["org_a", "org_b"],
        "key_field": "organisation_id",
        "duration_s": duration_s,
        "rate": 400,
        "warmup_s": 0,
        "tick_ms": 10,
        "max_inflight": max_inflight,
        "backlog_limit_ms": PUBLISHER_BACKLOG_LIMIT_MS,
    }


def test_a_server_that_answers_too_slowly_makes_it_fall_behind(stub: _Stub) -> None:
    stub.delay_s = 0.2  # two slots, a batch every 10 ms: events queue for ~200 ms
    result = run_publisher(_config(stub, duration_s=1.5, max_inflight=2))
    assert result["max_backlog_ms"] > PUBLISHER_BACKLOG_LIMIT_MS
    assert result["kept_up"] is False
    assert result["http_errors"] == 0


def test_its_own_late_timer_is_reported_not_counted(stub: _Stub) -> None:
    # Started by hand, not with run_publisher: the test needs its pid.
    config = json.dumps(_config(stub, duration_s=2.0))
    process = subprocess.Popen(
        [node_executable(), str(PUBLISHER), config], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.8)  # node started and publishing
    os.kill(process.pid, signal.SIGSTOP)
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGCONT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    result = json.loads(output.strip().splitlines()[-1])
    # The events due while it was stopped waited ~300 ms for its timer, none for a slot.
    assert result["max_backlog_ms"] < PUBLISHER_BACKLOG_LIMIT_MS
    assert result["kept_up"] is True
    assert result["max_schedule_lag_ms"] >= 250
    assert stub.events == result["accepted"] == result["scheduled"] == 800


def test_a_socket_the_server_closed_under_a_batch_is_retried_once(stub: _Stub) -> None:
    stub.drops = 1
    result = run_publisher(_config(stub, duration_s=1.0))
    assert stub.drops == 0  # the drop happened
    assert result["http_errors"] == 0
    assert result["stale_socket_retries"] == 1
    assert result["kept_up"] is True
    # Every event reached the server once: the dropped batch was not taken, its retry was.
    assert stub.events == result["accepted"] == result["scheduled"] == 400


def test_it_stamps_events_on_the_machines_monotonic_clock(stub: _Stub) -> None:
    """The subscribers read the same clock: a latency is a difference of two readings of one
    clock in two processes. The wall clock would not do: each Node process fixes its
    `performance.timeOrigin` at start, so a wall clock slewed during a run skewed every
    later publisher against the long-lived subscribers (negative latencies, seen once)."""
    before_ms = time.monotonic() * 1000  # CLOCK_MONOTONIC on Linux, as Node's hrtime
    result = run_publisher(_config(stub, duration_s=0.5))
    after_ms = time.monotonic() * 1000
    assert result["accepted"] == len(stub.sent_at) == 200
    assert all(before_ms <= sent_at <= after_ms for sent_at in stub.sent_at)
    assert before_ms <= result["started_at"] <= result["ended_at"] <= after_ms
