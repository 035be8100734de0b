"""A webhook receiver for tests: a real HTTP server on loopback that verifies every request's
signature with the `standardwebhooks` package, as an integrator's would, and records it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook


@dataclass
class Receiver:
    """Records every request; answers the statuses queued in `answers` (then 204)."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    overlapping: int = 0
    #: Seconds each request is held before it is answered.
    delay: float = 0.01

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = json.loads(body)
        channel_id = payload["channel"]["channel_id"]
        self.in_flight[channel_id] = self.in_flight.get(channel_id, 0) + 1
        self.overlapping += self.in_flight[channel_id] > 1
        try:
            await asyncio.sleep(self.delay)  # long enough for a second request to overlap
            verified = Webhook(self.secrets[channel_id]).verify(body, dict(request.headers))
            self.requests.append({"id": request.headers["webhook-id"], "payload": verified})
        finally:
            self.in_flight[channel_id] -= 1
        return web.Response(status=self.answers.pop(0) if self.answers else 204)

    def sequences(self, channel_id: str | None = None) -> list[int]:
        return [
            r["payload"]["event"]["sequence"]
            for r in self.requests
            if channel_id is None or r["payload"]["channel"]["channel_id"] == channel_id
        ]


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A Receiver listening on 127.0.0.1 (its `url`), until the block ends."""
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield found
    finally:
        await runner.cleanup()
