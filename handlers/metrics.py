"""`GET /metrics`: the Prometheus scrape endpoint (text format 0.0.4), at the root.

Scrapers look for `/metrics` at the root, outside the API's `/api/v1`, so it is not an
operation of the OpenAPI document (which describes the API under its base paths) but a small
ASGI route in front of it (claims_realtime/app.py). Its every HTTP request passes through
here first, which is also where an ingestion request's arrival is timed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from connexion import request

from claims_realtime.handlers.problems import PROBLEM_JSON, method_not_allowed
from claims_realtime.realtime import metrics

log = logging.getLogger(__name__)

PATH = "/metrics"
ALLOWED = ("GET", "HEAD")
#: The request's arrival (time.perf_counter()), kept in its ASGI scope.
RECEIVED_AT = "claims_realtime.received_at"


def request_received_at() -> float | None:
    """When the current request arrived, for the ingest latency histogram."""
    received: float | None = request.scope.get(RECEIVED_AT)
    return received


class MetricsRoute:
    """Serves `/metrics`; stamps every other HTTP request's arrival and passes it on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"] == PATH:
                hub = scope.get("state", {}).get("hub")  # the lifespan's (None before it)
                sessions = len(hub.sio.eio.sockets) if hub is not None else None
                await self._scrape(scope["method"], send, sessions)
                return
            scope[RECEIVED_AT] = time.perf_counter()
        await self.app(scope, receive, send)

    @staticmethod
    async def _scrape(method: str, send: Any, engine_sessions: int | None) -> None:
        if method not in ALLOWED:
            problem, allow = method_not_allowed(method, ALLOWED)
            body = json.dumps(problem).encode()
            await _respond(send, 405, body, PROBLEM_JSON, allow=allow)
            return
        try:
            counts = await metrics.channel_counts()
        except Exception as exc:
            # The process's own metrics are still worth having; the channel series go
            # missing from this scrape, which alerting on absent series can notice.
            log.warning("metrics: channels not counted, the database failed: %s", exc)
            counts = None
        body = metrics.exposition(counts, engine_sessions)
        sent = b"" if method == "HEAD" else body
        await _respond(send, 200, sent, metrics.CONTENT_TYPE, len(body))


async def _respond(
    send: Any,
    status: int,
    body: bytes,
    content_type: str,
    length: int | None = None,
    *,
    allow: str | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body) if length is None else length).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
