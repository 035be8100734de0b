"""The webhook receiver of `--mode webhooks`: a local HTTP server the fallback webhooks go to.

It answers every POST 204 at once and records when it arrived (on the machine's monotonic
clock, as the publisher's times, and on the wall clock, as the server's), its webhook-id, and
the event's channel, sequence and `occurred_at`: for the benchmark's events, which carry none
of their own, the time the server recorded them at, which their deadline counts from. It
checks that each webhook-id is `<channel_id>.<sequence>`, and verifies the signature of every
VERIFY_EVERY-th request with the `standardwebhooks` package, as an integrator would (all of
them would cost more CPU than the server's signing). It runs in a thread of the benchmark's
process, on its own event loop, like the history readers; its CPU is that thread's
(`native_id`, for procstat).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

#: One request in this many has its signature verified (the first one too).
VERIFY_EVERY = 100
#: Problems kept verbatim; the rest are only counted.
SAMPLES = 5
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Arrival:
    """One webhook request, as it arrived."""

    webhook_id: str
    channel_id: str
    sequence: int
    #: The event's `occurred_at` (wall clock, s): its recorded time, given none of its own.
    recorded_s: float
    #: When the request arrived: wall clock (s), and monotonic (ms, as the publisher's times).
    arrived_s: float
    arrived_ms: float


@dataclass
class Checks:
    """What the receiver verified, and what was wrong."""

    verified: int = 0
    bad_signatures: int = 0
    #: A webhook-id that is not `<channel_id>.<sequence>`, or a body that does not parse.
    malformed: int = 0
    samples: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.samples) < SAMPLES:
            self.samples.append(text)


class WebhookReceiver:
    """Listens on 127.0.0.1 (`url`) while in the `with` block. `secrets` maps a channel id to
    its fallback's signing secret; a channel without one is not verified."""

    def __init__(self) -> None:
        self.url = ""
        self.secrets: dict[str, str] = {}
        #: Every request so far, in arrival order (appended by the receiver's thread only).
        self.arrivals: list[Arrival] = []
        self.checks = Checks()
        self.native_id: int | None = None
        self._requests = 0
        self._stop = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="webhook-receiver", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._started.wait(START_TIMEOUT_S)
        if self._error is not None or not self.url:
            raise RuntimeError(f"the webhook receiver did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(START_TIMEOUT_S)

    def since(self, mark: int) -> list[Arrival]:
        """The requests that arrived after the first `mark` (a `len(arrivals)` taken earlier)."""
        return self.arrivals[mark:]

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__, in the caller's thread
            self._error = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}/hook"
            self._started.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived_ms = time.monotonic() * 1000.0
        arrived_s = time.time()
        body = await request.read()
        self._requests += 1
        message_id = request.headers.get("webhook-id", "")
        try:
            payload = json.loads(body)
            channel_id = str(payload["channel"]["channel_id"])
            event = payload["event"]
            sequence = int(event["sequence"])
            recorded_s = datetime.fromisoformat(event["occurred_at"]).timestamp()
        except (ValueError, KeyError, TypeError) as exc:
            self.checks.malformed += 1
            self.checks.problem(f"{message_id}: body unreadable ({exc!r})")
            return web.Response(status=204)
        if message_id != f"{channel_id}.{sequence}":
            self.checks.malformed += 1
            self.checks.problem(f"webhook-id {message_id!r} for {channel_id} #{sequence}")
        self.arrivals.append(
            Arrival(message_id, channel_id, sequence, recorded_s, arrived_s, arrived_ms)
        )
        if self._requests % VERIFY_EVERY == 1 and channel_id in self.secrets:
            self._verify(channel_id, body, dict(request.headers))
        return web.Response(status=204)

    def _verify(self, channel_id: str, body: bytes, headers: dict[str, Any]) -> None:
        try:
            Webhook(self.secrets[channel_id]).verify(body, headers)
        except WebhookVerificationError as exc:
            self.checks.bad_signatures += 1
            self.checks.problem(f"{headers.get('webhook-id')}: {exc}")
        else:
            self.checks.verified += 1
