"""The bare baseline: python-socketio doing the same fan-out as our server, with no storage.

    python -m tools.bench.baseline --port P [--host 127.0.0.1] [--publisher-key KEY]

Same surface as the server under test, reduced to what the benchmark drives:

- `POST /channels` `{kind: organisation|user, organisation_id?, user_id}` ->
  `{channel_id, websocket_url, channel_token}` (kept in memory only);
- `POST /events/batch` `{events: [...]}` (the body of our batch endpoint): for each event and
  each matching channel (organisation channels by organisation_id, user channels by user_id),
  `await sio.emit(event_type, envelope, namespace="/channels/<id>")`, one await per channel,
  sequentially: the plain python-socketio emit path, as the issue's reference figures used.
  Then 202;
- `GET /health` -> 200;
- Socket.IO namespaces `/channels/<id>`, accepted with `auth: {token}` matching the channel.

There is no history, no recovery message and no ack id on events (a namespace broadcast cannot
carry one), so the baseline is the cost of the fan-out alone.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import socketio
import uvicorn
from socketio.exceptions import ConnectionRefusedError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

NAMESPACE_PREFIX = "/channels/"
EVENT_TYPES = frozenset(
    {"status_changed", "claim_submitted", "claim_approved", "claim_rejected", "comment_added"}
)


@dataclass
class Channel:
    """One subscription: its token and its per-channel sequence counter."""

    channel_id: str
    token: str
    sequence: int = 0


class Registry:
    """Channels and the routing tables, in memory."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.by_organisation: dict[str, list[Channel]] = defaultdict(list)
        self.by_user: dict[str, list[Channel]] = defaultdict(list)
        self._ids = itertools.count(1)
        self._event_ids = itertools.count(1)

    def create(self, kind: str, organisation_id: str | None, user_id: str) -> Channel:
        channel = Channel(f"chan_{next(self._ids):012x}", secrets.token_urlsafe(24))
        self.channels[channel.channel_id] = channel
        if kind == "organisation":
            assert organisation_id is not None
            self.by_organisation[organisation_id].append(channel)
        else:
            self.by_user[user_id].append(channel)
        return channel

    def next_event_id(self) -> str:
        return f"evt_{next(self._event_ids):024x}"


def create_app(publisher_key: str | None = None) -> socketio.ASGIApp:
    """The ASGI app: Socket.IO in front of a tiny Starlette app for the REST side."""
    registry = Registry()
    sio = socketio.AsyncServer(
        async_mode="asgi",
        namespaces="*",
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )

    @sio.on("connect", namespace="*")  # type: ignore[untyped-decorator]
    async def connect(namespace: str, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        channel = None
        if namespace.startswith(NAMESPACE_PREFIX):
            channel = registry.channels.get(namespace[len(NAMESPACE_PREFIX) :])
        if channel is None:
            raise ConnectionRefusedError("unknown channel")
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not secrets.compare_digest(token, channel.token):
            raise ConnectionRefusedError("bad token")

    async def create_channel(request: Request) -> JSONResponse:
        body = await request.json()
        kind = body.get("kind")
        user_id = body.get("user_id")
        organisation_id = body.get("organisation_id")
        if kind not in ("organisation", "user") or not isinstance(user_id, str):
            return JSONResponse({"detail": "kind and user_id are required"}, 400)
        if kind == "organisation" and not isinstance(organisation_id, str):
            return JSONResponse({"detail": "organisation_id is required"}, 400)
        channel = registry.create(kind, organisation_id, user_id)
        host = request.headers.get("host", "127.0.0.1")
        return JSONResponse(
            {
                "channel_id": channel.channel_id,
                "websocket_url": f"ws://{host}{NAMESPACE_PREFIX}{channel.channel_id}",
                "channel_token": channel.token,
            },
            201,
        )

    async def publish_batch(request: Request) -> JSONResponse:
        if publisher_key is not None and request.headers.get("x-publisher-key") != publisher_key:
            return JSONResponse({"detail": "bad publisher key"}, 401)
        body = await request.json()
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= 500:
            return JSONResponse({"detail": "events: 1 to 500 events"}, 400)
        if not all(isinstance(e, dict) and e.get("event_type") in EVENT_TYPES for e in events):
            return JSONResponse({"detail": "unknown event_type"}, 400)
        results = []
        occurred_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for event in events:
            event_id = registry.next_event_id()
            targets = registry.by_organisation.get(event.get("organisation_id", ""), [])
            targets = targets + registry.by_user.get(event.get("user_id", ""), [])
            for channel in targets:
                channel.sequence += 1
                envelope = {
                    "channel_id": channel.channel_id,
                    "sequence": channel.sequence,
                    "event_id": event_id,
                    "event_type": event["event_type"],
                    "claim_id": event.get("claim_id"),
                    "organisation_id": event.get("organisation_id"),
                    "user_id": event.get("user_id"),
                    "actor_id": event.get("actor_id"),
                    "occurred_at": occurred_at,
                    "data": event.get("data") or {},
                }
                await sio.emit(
                    event["event_type"],
                    envelope,
                    namespace=NAMESPACE_PREFIX + channel.channel_id,
                )
            results.append({"event_id": event_id, "channels": len(targets), "duplicate": False})
        return JSONResponse({"results": results}, 202)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "channels": len(registry.channels)})

    rest = Starlette(
        routes=[
            Route("/channels", create_channel, methods=["POST"]),
            Route("/events/batch", publish_batch, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    return socketio.ASGIApp(sio, other_asgi_app=rest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--publisher-key", default=None, help="require X-Publisher-Key")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.publisher_key),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        # As our server: compression costs more CPU than it saves on small JSON payloads.
        ws_per_message_deflate=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
