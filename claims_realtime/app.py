"""The composition root: `create_app(settings)` builds the whole service as one ASGI app.

    socketio.ASGIApp                  /socket.io/  -> Socket.IO (namespaces /channels/<id>)
      └── MetricsRoute                GET /metrics -> Prometheus text (handlers/metrics.py)
          └── RequestId               X-Request-ID on every response and its log lines
              └── CORS                CORS_ALLOWED_ORIGINS (preflights answered here)
                  └── BodyLimit       bodies over MAX_REQUEST_BYTES -> 413
                      └── ConsoleRoute    GET /console/ -> the live console
                          └── AsyncApiRoute   GET /api/v1/asyncapi.yaml (static.py)
                              └── MethodGuard     undeclared methods -> 405 with an exact Allow
                                  └── connexion.AsyncApp  the document, mounted twice

Socket.IO is the outermost app so that Connexion's lifespan (database, background jobs)
runs under uvicorn and under Schemathesis alike (see docs/architecture.md, "Facts about the
stack the code relies on").
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import connexion
import socketio
import yaml

from claims_realtime.auth import SECURITY_MAP, TokenVerifier, document_for_mode
from claims_realtime.console import ConsoleRoute
from claims_realtime.cors import http_cors, socket_cors
from claims_realtime.guards import BodyLimit, MethodGuard
from claims_realtime.handlers.metrics import MetricsRoute
from claims_realtime.http import ERROR_HANDLERS, SnakeCaseResolver
from claims_realtime.logs import RequestId
from claims_realtime.logs import configure_logging as _configure_logging
from claims_realtime.models.credentials import hash_secret
from claims_realtime.models.db import close_database, open_database
from claims_realtime.models.fallbacks import WebhookPolicy, keys_agree
from claims_realtime.models.history import Retention
from claims_realtime.publisher_key import publisher_key_failures, resolve_publisher_key
from claims_realtime.realtime.broker import create_broker
from claims_realtime.realtime.hub import Hub
from claims_realtime.realtime.limits import FailureLimiter
from claims_realtime.realtime.metrics import process_exited, watch_collections
from claims_realtime.realtime.namespace import ChannelNamespace
from claims_realtime.realtime.outbox import OutboxConsumer
from claims_realtime.realtime.readiness import ReadinessCheck
from claims_realtime.realtime.server import create_socket_server
from claims_realtime.realtime.webhooks import WebhookDispatcher
from claims_realtime.settings import Settings
from claims_realtime.static import AsyncApiRoute, package_file
from claims_realtime.validation import body_problem, request_body_schema, validator_map
from claims_realtime.webhook_key import webhook_policy

SPEC_FILE = "claims-realtime.yaml"
#: Where the document is served: the canonical prefix, and the source contract's literal
#: doubled one (`/api/v1/realtime-subscriptions/api/v1/realtime-subscriptions/...`).
CANONICAL_BASE = "/api/v1"
CONTRACT_BASE = "/api/v1/realtime-subscriptions/api/v1"
BASE_PATHS = (CANONICAL_BASE, CONTRACT_BASE)

log = logging.getLogger(__name__)


@functools.cache
def load_spec() -> dict[str, Any]:
    """The OpenAPI document (package data: openapi/), parsed once per process (libyaml when
    available: the pure Python parser made each app build take a third of a second)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    text = package_file("openapi", SPEC_FILE).decode("utf-8")
    document: dict[str, Any] = yaml.load(text, Loader=loader)
    return document


#: The cyclic garbage collector's thresholds in a server process (CPython's are 700, 10, 10):
#: at 700, short-lived objects under load got promoted and full collections, which stop the
#: event loop, came every few seconds. Figures: docs/performance-log.md#interpreter-settings.
SERVER_GC_THRESHOLDS = (10_000, 50, 10)
#: How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms):
#: a database thread (aiosqlite's: reads, an in-memory database's writes) waits out the
#: interval at each hand-off with the busy event loop, and each forced hand-off costs CPU;
#: 1 ms balanced the two (measured while SQLite's writes ran in-thread). Figures: same place.
SERVER_SWITCH_INTERVAL = 0.001


def create_server_app() -> socketio.ASGIApp:
    """The app `claims-realtime serve` runs in each server process (uvicorn factory): the
    service, with the interpreter tuned for a long-lived, busy server process."""
    app = create_app()
    # What exists now (modules, the parsed document, routes) lives as long as the process:
    # keep it out of every later full collection's scan.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)
    sys.setswitchinterval(SERVER_SWITCH_INTERVAL)
    watch_collections()
    signal.signal(signal.SIGUSR2, _collect_on_request)
    return app


def _collect_on_request(signum: int, frame: Any) -> None:
    """SIGUSR2: a full garbage collection now, and the live memory it leaves (the metric
    claims_realtime_python_blocks_after_full_collection, and a log line). The interpreter
    runs one only every few minutes under load: `bench --mode soak` asks for one every
    half minute to see whether live memory grows. It stops the event loop while it runs
    (about 150 ms with 1,000 sockets on the benchmark machine)."""
    started = time.perf_counter()
    unreachable = gc.collect()
    log.info(
        "full garbage collection on request: %.0f ms, %d unreachable objects freed, "
        "%d Python blocks live",
        (time.perf_counter() - started) * 1000,
        unreachable,
        sys.getallocatedblocks(),
    )


def configure_logging(level: str, log_format: str = "text") -> None:
    _configure_logging(level, log_format)


async def agreed(policy: WebhookPolicy) -> WebhookPolicy:
    """`policy`, marked unusable (with an error in the log) if its sealing keys are not the
    ones the database's other processes use."""
    if await keys_agree(policy.box):
        return policy
    log.error(
        "WEBHOOK_SECRET_KEY differs from the other server processes': this process will not "
        "set fallbacks (503) nor send webhooks; give every process the same WEBHOOK_SECRET_KEY"
    )
    return replace(policy, keys_agree=False)


def webhook_dispatcher(settings: Settings, policy: WebhookPolicy, hub: Hub) -> WebhookDispatcher:
    """This process's sender of due fallback webhooks; it sees the confirmations the hub has
    not written back yet, so a just-confirmed event is not sent."""
    return WebhookDispatcher(
        policy,
        hub.retention,
        node_id=hub.node_id,
        timeout=settings.webhook_timeout_seconds,
        concurrency=settings.webhook_concurrency,
        poll_interval=settings.webhook_poll_seconds,
        retry_for=settings.webhook_retry_for_seconds,
        confirmed_locally=lambda channel_id: hub.fanout.pending_positions(channel_id)[1],
    )


def outbox_consumer(settings: Settings, hub: Hub) -> OutboxConsumer | None:
    """The outbox consumer when OUTBOX_URL is set: each row's event is checked against the
    very schema `POST /claim-events` validates its body with."""
    if settings.outbox_url is None:
        return None
    schema = request_body_schema(load_spec(), "/claim-events", "post")
    return OutboxConsumer(
        hub,
        settings.outbox_url,
        settings.outbox_table,
        check=functools.partial(body_problem, schema),
        poll_interval=settings.outbox_poll_seconds,
        batch_size=settings.outbox_batch_size,
    )


def create_app(settings: Settings | None = None) -> socketio.ASGIApp:
    """Build the service. Nothing touches the database until the ASGI lifespan starts."""
    settings = (settings or Settings.from_env()).with_defaults()
    configure_logging(settings.log_level, settings.log_format)
    # Built now, so that a bad JWT key stops start-up rather than failing every request.
    token_verifier = TokenVerifier.from_settings(settings)
    # Likewise a bad WEBHOOK_SECRET_KEY; a generated key is read (or made) at start-up.
    configured_webhook_policy = webhook_policy(settings) if settings.webhook_secret_key else None
    sio = create_socket_server(
        cors_allowed_origins=socket_cors(settings.cors_allowed_origins),
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
        fast_paths=settings.fast_paths,
    )
    hub = Hub(
        sio,
        Retention(max_events=settings.history_max_events, ttl_seconds=settings.history_ttl_seconds),
        max_event_data_bytes=settings.max_event_data_bytes,
        broker=create_broker(settings.redis_url),
        flush_interval=settings.flush_interval_seconds,
        prune_interval=settings.prune_interval_seconds,
        heartbeat_interval=settings.node_heartbeat_seconds,
        stale_after=settings.node_stale_seconds,
        max_socket_backlog=settings.max_socket_backlog,
        connect_failures=FailureLimiter(
            settings.connect_failure_limit, settings.connect_failure_window_seconds
        ),
    )
    # The channel namespaces (`/channels/<id>`) join and leave channels through the hub.
    sio.register_namespace(ChannelNamespace(hub))
    consumer = outbox_consumer(settings, hub)
    if consumer is not None:
        # Reported, not required: this process serves its sockets and the API without the
        # outbox, whose rows wait for it safely.
        hub.readiness_checks["outbox"] = ReadinessCheck(consumer.readiness, required=False)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
        # Fallback webhooks: the keys sealing their secrets, and the hosts trusted.
        policy = configured_webhook_policy or webhook_policy(settings)
        # Each part started is stopped, in reverse order, even when a later one fails to
        # start or an earlier one fails to stop: an open database left behind would refuse
        # the next open in this process (Tortoise keeps one global context).
        async with contextlib.AsyncExitStack() as started:
            started.callback(process_exited)
            await open_database(settings.database_url, pool_size=settings.database_pool_size)
            started.push_async_callback(close_database)
            policy = await agreed(policy)
            publisher_key_hash = hash_secret(resolve_publisher_key(settings))
            await hub.start()
            started.push_async_callback(hub.stop)
            dispatcher = webhook_dispatcher(settings, policy, hub)
            await dispatcher.start()
            started.push_async_callback(dispatcher.stop)
            if consumer is not None:
                await consumer.start()
                started.push_async_callback(consumer.stop)
            # Lifespan state: copied into every request's `request.state`.
            yield {
                "settings": settings,
                "hub": hub,
                "publisher_key_hash": publisher_key_hash,
                "publisher_key_failures": publisher_key_failures(settings),
                "token_verifier": token_verifier,
                "webhook_policy": policy,
            }

    # Connexion's own request path, extended through its documented points: resolver,
    # validator map, security map, error handlers.
    api = connexion.AsyncApp(
        __name__,
        lifespan=lifespan,
        resolver=SnakeCaseResolver(),
        validator_map=validator_map(),
        strict_validation=True,
        security_map=SECURITY_MAP,
    )
    # The longer prefix first: Connexion routes to the first mount whose prefix matches.
    for base_path in sorted(BASE_PATHS, key=len, reverse=True):
        name = base_path.strip("/").replace("/", "_")
        # A copy per mount: Connexion resolves and annotates the document it is given.
        # jwt mode adds the bearer requirement to the management API (claims_realtime.auth).
        document = document_for_mode(load_spec(), settings.auth_mode)
        api.add_api(document, base_path=base_path, name=name)
    for error, handler in ERROR_HANDLERS:
        api.add_error_handler(error, handler)
    http_app: Any = MethodGuard(api, load_spec(), BASE_PATHS)
    # GET /api/v1/asyncapi.yaml: the Socket.IO side's document, beside openapi.json.
    http_app = AsyncApiRoute(http_app)
    # GET /console/: the live event console's static files, beside the document.
    http_app = ConsoleRoute(http_app)
    # Bodies over MAX_REQUEST_BYTES get a 413 before they are read whole.
    http_app = BodyLimit(http_app, settings.max_request_bytes)
    # CORS outside MethodGuard: preflights (OPTIONS) are not operations of the document.
    http_app = RequestId(http_cors(http_app, settings.cors_allowed_origins))
    # GET /metrics at the root, beside the document (handlers/metrics.py); it also times
    # every request's arrival, so it comes first.
    http_app = MetricsRoute(http_app)
    return socketio.ASGIApp(sio, other_asgi_app=http_app)
