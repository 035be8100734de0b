"""`claims-realtime`: serve the API, migrate the schema, set up the outbox, publish an event,
tail a channel."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from claims_realtime.logs import configure_logging
from claims_realtime.realtime.fastpaths import all_match, installed_version
from claims_realtime.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"


#: Largest websocket frame uvicorn reads (clients' packets are at most 64 KiB).
WS_MAX_FRAME_BYTES = 1024 * 1024


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()
    # Now, not at the app's build: the websocket protocol is chosen (and warned about) here.
    configure_logging(settings.log_level, settings.log_format)
    if args.workers > 1 and (not settings.redis_url or settings.database_url.startswith("sqlite")):
        raise SystemExit(
            "--workers > 1 needs REDIS_URL (fan-out between the processes) and a PostgreSQL "
            "DATABASE_URL (one database for all of them); see README, Running several processes"
        )
    with _shared_metrics(args.workers):
        _run_uvicorn(uvicorn, args, settings)
    return 0


#: prometheus-client's multiprocess mode: where every process keeps its metric values.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """With several processes on one port, a scrape reaches any one of them: each keeps its
    metrics in a directory they share, and each scrape adds them all up (realtime.metrics).
    A fresh directory per run, removed after it, unless PROMETHEUS_MULTIPROC_DIR is set."""
    if workers <= 1 or os.environ.get(METRICS_DIR_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="claims-realtime-metrics-")
    os.environ[METRICS_DIR_ENV] = directory  # inherited by the worker processes
    try:
        yield
    finally:
        del os.environ[METRICS_DIR_ENV]
        shutil.rmtree(directory, ignore_errors=True)


#: uvicorn's own websocket protocol, and ours with shortcuts for acks in and events out.
STOCK_WS_PROTOCOL = "websockets-sansio"
CHANNEL_WS_PROTOCOL = "claims_realtime.realtime.transport:ChannelWebSocketProtocol"


def websocket_protocol(settings: Settings) -> str:
    """Ours when FAST_PATHS is on and uvicorn and websockets are the releases it was written
    for (else one warning); uvicorn's own otherwise."""
    if not settings.fast_paths:
        return STOCK_WS_PROTOCOL
    try:
        from claims_realtime.realtime import transport
    except Exception:  # a release that moved what it subclasses: as a mismatch, not a crash
        log.warning(
            "the uvicorn websocket protocol (realtime.transport) does not load with uvicorn "
            "%s and websockets %s; serving it through the stock path instead",
            installed_version("uvicorn"),
            installed_version("websockets"),
            exc_info=True,
        )
        return STOCK_WS_PROTOCOL
    if all_match((transport.FAST_PATH_UVICORN, transport.FAST_PATH_WEBSOCKETS)):
        return CHANNEL_WS_PROTOCOL
    return STOCK_WS_PROTOCOL


def _run_uvicorn(uvicorn: Any, args: argparse.Namespace, settings: Settings) -> None:
    uvicorn.run(
        "claims_realtime.app:create_server_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        # Behind a load balancer, trust its X-Forwarded-* (set PUBLIC_URL for websocket_url).
        proxy_headers=True,
        # httptools with a bound on each request's line and headers (MAX_HEADER_BYTES,
        # MAX_HEADER_COUNT): 431 beyond, before they cost memory.
        http="claims_realtime.http_protocol:HttpProtocol",
        # Socket.IO payloads are small JSON: per-message compression cost more CPU than it
        # saved bytes (py-spy under load). Socket.IO's own servers leave it off by default.
        ws_per_message_deflate=False,
        # uvicorn's websockets protocol with shortcuts for acks in and events out, or
        # uvicorn's own (FAST_PATHS=off, or other uvicorn or websockets releases).
        ws=websocket_protocol(settings),
        # uvicorn would buffer a websocket frame of up to 16 MiB before Engine.IO's 64 KiB
        # limit (realtime.server.MAX_CLIENT_PACKET_BYTES) sees it: close larger ones there.
        ws_max_size=WS_MAX_FRAME_BYTES,
        # Engine.IO's heartbeat (its PING and PONG, the reader's deadline) finds dead peers:
        # uvicorn's own websocket pings doubled it, with a frame each way and a timer per
        # connection every 20 s (young garbage the collector then scans: docs/protocol.md).
        ws_ping_interval=None,
        # An abandoned Engine.IO long-poll holds its request open for up to the ping
        # timeout; do not let it hold a shutdown for that long. Clients resume anyway.
        timeout_graceful_shutdown=args.graceful_timeout,
    )


def _migrate(args: argparse.Namespace) -> int:
    from claims_realtime.models.db import migrate

    settings = Settings.from_env()
    applied = asyncio.run(migrate(settings.database_url))
    print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return 0


def _reseal(args: argparse.Namespace) -> int:
    from claims_realtime.models.db import close_database, open_database
    from claims_realtime.models.fallbacks import Resealed, reseal_secrets
    from claims_realtime.webhook_key import webhook_policy

    settings = Settings.from_env()
    box = webhook_policy(settings).box

    async def run() -> Resealed:
        await open_database(settings.database_url)
        try:
            return await reseal_secrets(box)
        finally:
            await close_database()

    done = asyncio.run(run())
    print(f"resealed {done.resealed} webhook secret(s) with WEBHOOK_SECRET_KEY's first key")
    if done.unreadable:
        print(
            f"# {done.unreadable} sealed value(s) open with none of WEBHOOK_SECRET_KEY's keys "
            "and were left as they are",
            file=sys.stderr,
        )
        return 1
    return 0


def _outbox_init(args: argparse.Namespace) -> int:
    import asyncpg

    from claims_realtime.models import outbox

    settings = Settings.from_env()
    if settings.outbox_url is None:
        raise SystemExit("OUTBOX_URL is not set: the postgres:// URL of the outbox's database")

    async def run() -> None:
        connection = await asyncpg.connect(settings.outbox_url)
        try:
            await outbox.create(connection, settings.outbox_table)
        finally:
            await connection.close()

    asyncio.run(run())
    table = settings.outbox_table
    print(f"outbox ready: {table}, {outbox.rejected_table(table)} and the NOTIFY trigger")
    return 0


def _publisher_key(explicit: str | None) -> str:
    if explicit:
        return explicit
    from claims_realtime.publisher_key import key_path

    settings = Settings.from_env()
    if settings.publisher_key:
        return settings.publisher_key
    path = key_path(settings)
    if path.exists():
        return path.read_text().strip()
    raise SystemExit(
        "no publisher key: pass --key, set PUBLISHER_KEY, "
        f"or start the server once to create {path}"
    )


def _publish(args: argparse.Namespace) -> int:
    import httpx

    event: dict[str, Any] = {
        "event_type": args.type,
        "claim_id": args.claim,
        "organisation_id": args.org,
        "user_id": args.user,
    }
    for name in ("event_id", "actor_id", "occurred_at"):
        if getattr(args, name):
            event[name] = getattr(args, name)
    if args.data:
        try:
            event["data"] = json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--data is not JSON: {exc}") from None
    response = httpx.post(
        args.url.rstrip("/") + "/api/v1/claim-events",
        json=event,
        headers={"X-Publisher-Key": _publisher_key(args.key)},
        timeout=30,
    )
    print(response.text)
    return 0 if response.status_code == 202 else 1


def _tail(args: argparse.Namespace) -> int:
    import socketio

    from claims_realtime.realtime.client import ChannelClient, ChannelClosed, Recovery

    # The client's warnings (e.g. a connect retry) go to stderr as comment lines.
    logging.basicConfig(level=logging.WARNING, format="# %(message)s", stream=sys.stderr)

    async def run() -> int:
        client = ChannelClient(
            args.websocket_url,
            args.token,
            last_sequence=args.last_sequence,
            connect_timeout=args.connect_timeout,
        )
        try:
            async with client:
                async for message in client:
                    if isinstance(message, Recovery):
                        print(
                            f"# recovery: {json.dumps(message.__dict__)}",
                            file=sys.stderr,
                            flush=True,
                        )
                    else:
                        print(json.dumps(message), flush=True)
        except ChannelClosed as exc:
            print(f"# {exc}", file=sys.stderr)
            return 1
        except socketio.exceptions.ConnectionError as exc:
            print(f"# cannot connect to {args.websocket_url}: {exc}", file=sys.stderr)
            return 1
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claims-realtime", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP + Socket.IO server (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on this port (needs REDIS_URL and PostgreSQL; websocket only)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=5.0,
        help="seconds to let open requests finish on shutdown (default 5)",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate", help="create or upgrade the database schema (DATABASE_URL) and exit"
    )
    migrate.set_defaults(run=_migrate)

    reseal = commands.add_parser(
        "reseal-webhook-secrets",
        help="seal every fallback's signing secret again with WEBHOOK_SECRET_KEY's first key "
        "(after a rotation, so the old keys can be dropped) and exit",
    )
    reseal.set_defaults(run=_reseal)

    outbox = commands.add_parser(
        "outbox", help="the transactional outbox in the claims database (OUTBOX_URL)"
    )
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True)
    outbox_init = outbox_commands.add_parser(
        "init",
        help="create the OUTBOX_TABLE table, its _rejected table and the NOTIFY trigger "
        "(idempotent) and exit",
    )
    outbox_init.set_defaults(run=_outbox_init)

    publish = commands.add_parser("publish", help="publish one claim event")
    publish.add_argument("--type", required=True, help="status_changed, claim_submitted, ...")
    publish.add_argument("--org", required=True, help="organisation_id")
    publish.add_argument("--user", required=True, help="user_id of the claim's owner")
    publish.add_argument("--claim", required=True, help="claim_id")
    publish.add_argument("--data", help="JSON object with the event's data")
    publish.add_argument("--event-id", dest="event_id", help="idempotency key (default: assigned)")
    publish.add_argument("--actor", dest="actor_id", help="actor_id")
    publish.add_argument("--occurred-at", dest="occurred_at", help="RFC 3339 time")
    publish.add_argument(
        "--url", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})"
    )
    publish.add_argument(
        "--key", help="publisher key (default: PUBLISHER_KEY or DATA_DIR/publisher.key)"
    )
    publish.set_defaults(run=_publish)

    tail = commands.add_parser(
        "tail", help="print a channel's events as JSON lines, resuming on drops"
    )
    tail.add_argument("websocket_url")
    tail.add_argument("--token", required=True, help="the channel_token from subscription")
    tail.add_argument(
        "--last-sequence",
        dest="last_sequence",
        type=int,
        default=None,
        help="resume after this sequence (default: the server's resume point)",
    )
    tail.add_argument(
        "--connect-timeout",
        dest="connect_timeout",
        type=float,
        default=30.0,
        help="keep retrying the first connection this many seconds (default 30)",
    )
    tail.set_defaults(run=_tail)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
