"""`python -m tools.bench`: deliveries/s, latency, per core and per connection, measured side
by side against a bare python-socketio baseline, all on loopback.

Modes: sweep (default), storm, replay, ingest, all; --smoke runs a tiny version of everything.
soak (ours only, never in `all` or --smoke): clients drop and resume at random under steady
ingestion for --soak-seconds; zero loss, zero duplicates after dedupe, and server memory.
history (ours only, not in `all`): delivery p99 of the org workload at --history-rate
deliveries/s, without and with --history-readers clients paging listChannelEvents 1,000
events a page (paced to --history-pages-per-s in all, if given), alternated --history-pairs
times; each reader channel holds --history-events events beforehand.
webhooks (ours only, not in `all`): --subscribers user channels with a fallback webhook to a
local receiver after --webhook-after-seconds and as many without, subscribers that never
confirm, --webhook-rate events/s to one set or the other for --webhook-step-seconds,
alternated --webhook-pairs times: webhooks/s, their lateness past the deadline, every one
accounted for, and delivery p99 with and without fallbacks.
outbox (ours only, not in `all`; in --smoke with a PostgreSQL): our server consumes a scratch
outbox database beside --outbox-url, a writer process INSERTs at each of --outbox-rates
events/s to the --outbox-workload's subscribers: events committed/s, backlog, insert -> socket
latency; then --outbox-drain-events rows in one commit: the consumer's ceiling.
Results: a table on stdout, every figure in a JSON file (--output).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.bench.options import (
    DEFAULT_RATES,
    OUTBOX_DEFAULT_ADMIN_URL,
    OUTBOX_DEFAULT_RATES,
    WEBHOOK_STEADY_SECONDS,
    Options,
)

MODES = ["sweep", "storm", "replay", "ingest"]


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(item.strip()) for item in text.split(",") if item.strip()]

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode",
        choices=[*MODES, "all", "soak", "history", "webhooks", "outbox"],
        default=None,
        help="what to measure (default sweep; with --smoke: all)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny run of everything, well under a minute (the test suite's)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON results file (default bench-results/bench-<UTC time>.json)",
    )
    parser.add_argument(
        "--servers",
        type=_csv(str),
        default=None,
        help="comma-separated: ours,baseline (default both)",
    )
    parser.add_argument(
        "--workloads",
        type=_csv(str),
        default=None,
        help="comma-separated: org (fan-out to each organisation's channels), "
        "user (one channel per event); default both",
    )
    parser.add_argument(
        "--subscribers",
        type=int,
        default=None,
        help="channels (= connections) per sweep workload (default 1000)",
    )
    parser.add_argument(
        "--orgs", type=int, default=None, help="organisations of the org workload (default 10)"
    )
    parser.add_argument(
        "--rates",
        type=_csv(int),
        default=None,
        help="sweep deliveries/s, comma-separated (default "
        + ",".join(str(r) for r in DEFAULT_RATES)
        + ")",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="sweep rounds, each running every server on every workload, the server order "
        "alternating round to round; the summary judges the median and worst ratio (default 1)",
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=None,
        help="length of a sweep step, warm-up included (default 8)",
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="start of each step not measured (default 1)",
    )
    parser.add_argument("--storm-clients", type=int, default=None, help="default 1000")
    parser.add_argument("--replay-events", type=int, default=None, help="default 100000")
    parser.add_argument("--ingest-seconds", type=float, default=None, help="default 10")
    parser.add_argument(
        "--ingest-concurrency",
        type=int,
        default=None,
        help="concurrent 500-event requests while ingesting (default 4)",
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=None,
        help="most concurrent batch requests of the sweep publisher (default 4)",
    )
    parser.add_argument(
        "--tick-ms",
        type=float,
        default=None,
        help="sweep publisher: a batch of the events due every this many ms (default 10)",
    )
    parser.add_argument(
        "--no-ack",
        action="store_true",
        help="sweep subscribers do not confirm events (by default they call the Socket.IO "
        "ack callback of every event, as a resuming client does)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="our server's DATABASE_URL (default SQLite in a fresh DATA_DIR); "
        "for postgres:// a scratch database is created beside it per server "
        "start (if allowed) and migrated",
    )
    parser.add_argument("--redis-url", default=None, help="our server's REDIS_URL")
    parser.add_argument(
        "--soak-seconds", type=float, default=None, help="soak: ingestion time (default 600)"
    )
    parser.add_argument(
        "--soak-rate",
        type=int,
        default=None,
        help="soak: deliveries/s through the batch API (default 1000)",
    )
    parser.add_argument(
        "--soak-drop-every",
        type=float,
        default=None,
        help="soak: mean seconds between two drops of one client (default 60); a dropped "
        "client reconnects 0.1-3 s later with auth.last_sequence",
    )
    parser.add_argument("--history-rate", type=int, default=None, help="default 5000")
    parser.add_argument("--history-pairs", type=int, default=None, help="default 2")
    parser.add_argument("--history-readers", type=int, default=None, help="default 2")
    parser.add_argument(
        "--history-events", type=int, default=None, help="per reader channel; default 5000"
    )
    parser.add_argument("--history-pages-per-s", type=float, default=None, help="default: unpaced")
    parser.add_argument(
        "--webhook-rate", type=int, default=None, help="events/s of a webhooks step (default 1000)"
    )
    parser.add_argument(
        "--webhook-after-seconds",
        type=int,
        default=None,
        help="the fallbacks' after_seconds (default 10, the API's least)",
    )
    parser.add_argument(
        "--webhook-step-seconds",
        type=float,
        default=None,
        help=f"length of a webhooks step (default after_seconds + {WEBHOOK_STEADY_SECONDS:g})",
    )
    parser.add_argument("--webhook-pairs", type=int, default=None, help="default 2")
    parser.add_argument(
        "--webhook-poll-interval",
        type=float,
        default=None,
        help="our server's WEBHOOK_POLL_INTERVAL in s (default: the server's own, 1 s)",
    )
    parser.add_argument(
        "--outbox-url",
        default=None,
        help="outbox: a PostgreSQL URL beside which a scratch outbox database is created "
        f"(default: a postgres:// --database-url, else {OUTBOX_DEFAULT_ADMIN_URL})",
    )
    parser.add_argument(
        "--outbox-workload",
        choices=["org", "user"],
        default=None,
        help="outbox: the subscribers (the sweep's workloads, sized by --subscribers and "
        "--orgs); default user, each event to one channel",
    )
    parser.add_argument(
        "--outbox-rates",
        type=_csv(int),
        default=None,
        help="outbox: events/s (not deliveries/s) the writer steps through (default "
        + ",".join(str(r) for r in OUTBOX_DEFAULT_RATES)
        + ")",
    )
    parser.add_argument(
        "--outbox-connections",
        type=int,
        default=None,
        help="outbox: the writer's connections, each INSERTing a tick's events (default 4)",
    )
    parser.add_argument(
        "--outbox-drain-events",
        type=int,
        default=None,
        help="outbox: rows inserted in one commit after the steps, timed until consumed "
        "(default 50000; 0: none)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="our server's --workers (needs PostgreSQL and Redis)"
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    options = Options.smoke_options() if args.smoke else Options()
    if args.mode is not None:
        options.modes = MODES if args.mode == "all" else [args.mode]
    overrides = {
        "servers": args.servers,
        "workloads": args.workloads,
        "subscribers": args.subscribers,
        "orgs": args.orgs,
        "rates": args.rates,
        "rounds": args.rounds,
        "step_seconds": args.step_seconds,
        "warmup_seconds": args.warmup_seconds,
        "storm_clients": args.storm_clients,
        "replay_events": args.replay_events,
        "ingest_seconds": args.ingest_seconds,
        "ingest_concurrency": args.ingest_concurrency,
        "max_inflight": args.max_inflight,
        "tick_ms": args.tick_ms,
        "soak_seconds": args.soak_seconds,
        "soak_rate": args.soak_rate,
        "soak_drop_every_s": args.soak_drop_every,
        "history_rate": args.history_rate,
        "history_pairs": args.history_pairs,
        "history_readers": args.history_readers,
        "history_events": args.history_events,
        "history_pages_per_s": args.history_pages_per_s,
        "webhook_rate": args.webhook_rate,
        "webhook_after_seconds": args.webhook_after_seconds,
        "webhook_step_seconds": args.webhook_step_seconds,
        "webhook_pairs": args.webhook_pairs,
        "webhook_poll_interval": args.webhook_poll_interval,
        "outbox_workload": args.outbox_workload,
        "outbox_rates": args.outbox_rates,
        "outbox_connections": args.outbox_connections,
        "outbox_drain_events": args.outbox_drain_events,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(options, name, value)
    options.ack = not args.no_ack
    options.database_url = args.database_url
    options.redis_url = args.redis_url
    options.workers = args.workers
    on_postgres = (args.database_url or "").startswith(("postgres://", "postgresql://"))
    options.outbox_url = args.outbox_url or (args.database_url if on_postgres else None)
    # The outbox needs a PostgreSQL: --smoke measures it only when one was named.
    if args.smoke and args.mode is None and options.outbox_url:
        options.modes = [*options.modes, "outbox"]
    return options


def validate(options: Options) -> str | None:
    """A usage problem, or None."""
    if unknown := set(options.servers) - {"ours", "baseline"}:
        return f"unknown servers: {', '.join(sorted(unknown))}"
    if unknown := set(options.workloads) - {"org", "user"}:
        return f"unknown workloads: {', '.join(sorted(unknown))}"
    if options.subscribers < 1 or options.orgs < 1 or options.subscribers < options.orgs:
        return "--subscribers and --orgs must be positive, with at least one channel per org"
    if not options.rates or min(options.rates) <= 0:
        return "--rates must be positive"
    if options.rounds < 1:
        return "--rounds must be positive"
    if options.warmup_seconds >= options.step_seconds:
        return "--warmup-seconds must be shorter than --step-seconds"
    if options.soak_seconds <= 0 or options.soak_rate <= 0 or options.soak_drop_every_s <= 0:
        return "--soak-seconds, --soak-rate and --soak-drop-every must be positive"
    pace = options.history_pages_per_s
    if (
        min(options.history_rate, options.history_pairs, options.history_readers) < 1
        or options.history_events < 0
        or (pace is not None and pace <= 0)
    ):
        return (
            "--history-rate, --history-pairs, --history-readers and --history-pages-per-s "
            "must be positive, --history-events not negative"
        )
    if (
        min(options.webhook_rate, options.webhook_pairs) < 1
        or options.webhook_after_seconds < 10
        or options.webhook_step <= 0
        or (options.webhook_poll_interval is not None and options.webhook_poll_interval <= 0)
    ):
        return (
            "--webhook-rate, --webhook-pairs, --webhook-step-seconds and "
            "--webhook-poll-interval must be positive, --webhook-after-seconds at least 10"
        )
    if (
        not options.outbox_rates
        or min(options.outbox_rates) <= 0
        or options.outbox_connections < 1
        or options.outbox_drain_events < 0
    ):
        return (
            "--outbox-rates and --outbox-connections must be positive, "
            "--outbox-drain-events not negative"
        )
    if options.workers > 1 and not (
        options.redis_url
        and (options.database_url or "").startswith(("postgres://", "postgresql://"))
    ):
        return "--workers > 1 needs --redis-url and a postgres:// --database-url"
    return None
