"""Fallback webhooks under load (`--mode webhooks`, our server only; not in `all`).

`subscribers` user channels (the sweep's user workload: one channel per user) are created with
a fallback webhook to a local receiver (tools.bench.receiver) after `webhook_after_seconds`,
and as many without one. Every channel has a subscriber that never confirms, so each event on
a channel with a fallback is owed a webhook. A step publishes `webhook_rate` events/s for
`Options.webhook_step` seconds to one set: "with" fallbacks, then waits until every webhook it
owes arrived (or the wait gives up); or "without", where nothing is owed and nothing must
arrive. The two alternate `webhook_pairs` times (without/with, then with/without, ...), as in
the history mode, and the medians of each side are compared.

Each step is a sweep step (`sweep.run_step`, judged the same way) whose measured deliveries
are the events sent from the deadline on, when there is time for some: those the subscribers
receive while the dispatcher sends the first events' webhooks. Delivery p99 with fallbacks
is judged against its limit (WEBHOOK_P99_LIMIT_MS) and shown beside the p99 without;
the webhooks by tools.bench.webhook_report.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from tools.bench import procstat
from tools.bench import webhook_report as figures
from tools.bench.node import SubscriberPool
from tools.bench.options import WEBHOOK_P99_LIMIT_MS, Options
from tools.bench.receiver import Arrival, WebhookReceiver
from tools.bench.report import Progress
from tools.bench.servers import ChannelSpec, OurServer
from tools.bench.sweep import Workload, run_step

#: After the step's last deadline, how long to wait at most for its webhooks; and give up
#: sooner when none arrived for this long.
WAIT_LIMIT_S = 90.0
WAIT_STALL_S = 15.0
#: Once every owed webhook arrived, a little longer, for a duplicate.
GRACE_S = 1.0


def server_env(options: Options) -> dict[str, str]:
    """Our server's settings for the run: the receiver on loopback allowed, over plain http."""
    env = {"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    if options.webhook_poll_interval is not None:
        env["WEBHOOK_POLL_INTERVAL"] = f"{options.webhook_poll_interval:g}"
    return env


def workloads(options: Options, url: str) -> tuple[Workload, Workload]:
    """(channels with a fallback to `url`, channels without): the user workload, twice."""
    after = options.webhook_after_seconds
    users = [f"usr_fallback_{i:04d}" for i in range(options.subscribers)]
    plain = [f"usr_plain_{i:04d}" for i in range(options.subscribers)]
    with_specs = [
        ChannelSpec("user", u, fallback_url=url, fallback_after_seconds=after) for u in users
    ]
    without_specs = [ChannelSpec("user", u) for u in plain]
    return (
        Workload("user", with_specs, users, "user_id", 1),
        Workload("user", without_specs, plain, "user_id", 1),
    )


def step_options(options: Options) -> Options:
    """A sweep step's options for this mode: its length, and deliveries measured from the
    deadline on when the step is long enough to have some after it."""
    seconds = options.webhook_step
    after = float(options.webhook_after_seconds)
    if seconds > after + options.warmup_seconds:
        warmup = after
    else:
        warmup = min(options.warmup_seconds, seconds / 2)
    return replace(options, step_seconds=seconds, warmup_seconds=warmup)


def wait_for_webhooks(
    receiver: WebhookReceiver,
    mark: int,
    expected: set[str],
    last_due_ms: float,
    progress: Progress,
    label: str,
) -> list[Arrival]:
    """The step's requests once every owed webhook arrived (and GRACE_S more), or none
    arrived for WAIT_STALL_S after the last deadline, or WAIT_LIMIT_S after it."""
    got: set[str] = set()
    seen = 0
    last_change = time.monotonic()
    while True:
        arrivals = receiver.since(mark)
        now = time.monotonic()
        if len(arrivals) > seen:
            got.update(a.webhook_id for a in arrivals[seen:] if a.webhook_id in expected)
            seen, last_change = len(arrivals), now
        progress.update(label, len(got) / max(1, len(expected)))
        if len(got) == len(expected):
            time.sleep(GRACE_S)
            return receiver.since(mark)
        past_due_s = now - last_due_ms / 1000.0
        if past_due_s > WAIT_LIMIT_S or (past_due_s > 0 and now - last_change > WAIT_STALL_S):
            return arrivals
        time.sleep(0.2)


def _with_fallbacks(
    server: OurServer,
    receiver: WebhookReceiver,
    pool: SubscriberPool,
    load: Workload,
    channel_of: dict[str, str],
    cumulative: dict[str, int],
    options: Options,
    progress: Progress,
    label: str,
) -> dict[str, Any]:
    """One step to the channels with fallbacks, then the wait for its webhooks."""
    before = dict(cumulative)
    mark = len(receiver.arrivals)
    checks_before = dict(vars(receiver.checks))
    assert receiver.native_id is not None
    receiver_cpu = procstat.CpuMeter([receiver.native_id])
    receiver_cpu_all = procstat.CpuMeter([receiver.native_id])
    receiver_cpu.start()
    receiver_cpu_all.start()
    step_opts = step_options(options)
    step = run_step(
        server, pool, load, options.webhook_rate, cumulative, step_opts, progress, label
    )
    during_step_pct = receiver_cpu.stop()
    # The receiver runs in this process, not among "other users' work" on the machine.
    step["other_cpu_pct"] = max(0.0, step["other_cpu_pct"] - during_step_pct)
    expected = figures.expected_ids(channel_of, before, cumulative)
    start_ms = float(step["publisher"]["started_at"])
    after = options.webhook_after_seconds
    last_due_ms = start_ms + (after + step_opts.step_seconds) * 1000.0
    server_cpu = procstat.CpuMeter([server.pid])
    server_cpu.start()
    waited = time.monotonic()
    arrivals = wait_for_webhooks(
        receiver, mark, expected, last_due_ms, progress, f"{label} webhooks"
    )
    only_webhooks_pct = server_cpu.stop()
    receiver_pct = receiver_cpu_all.stop()
    waited = time.monotonic() - waited
    hooks: dict[str, Any] = {
        **figures.account(expected, arrivals),
        **figures.lateness_figures(figures.lateness_ms(arrivals, after)),
        "steady_per_s": figures.steady_rate(
            arrivals, start_ms, after, step_opts.step_seconds, options.warmup_seconds
        ),
        **{
            name: getattr(receiver.checks, name) - checks_before[name]
            for name in ("verified", "bad_signatures", "malformed")
        },
        "problem_samples": list(receiver.checks.samples),
        # After the step, while waiting for its webhooks: the dispatcher's work, little else.
        "server_cpu_pct_after_step": only_webhooks_pct,
        "wait_s": waited,
        # The receiver's thread, step and wait: what receiving cost the generator's machine.
        "receiver_cpu_pct": receiver_pct,
    }
    late = hooks["lateness_p99_ms"]
    progress.done(
        f"{label} webhooks",
        f"{hooks['unique']:,}/{hooks['expected']:,} received, {hooks['duplicated']} duplicated, "
        f"lateness p99 {'n/a' if late is None else f'{late / 1000:.2f} s'}",
    )
    return {"fallbacks": True, "step": step, "webhooks": hooks}


def run_webhooks(
    server: OurServer, receiver: WebhookReceiver, options: Options, progress: Progress
) -> dict[str, Any]:
    """Alternate steps to channels without and with fallbacks; compare their delivery p99,
    and account for every webhook the steps with fallbacks owed."""
    with_load, without_load = workloads(options, receiver.url)
    label = f"webhooks {server.name}/user"
    progress.info(f"{label}: creating {2 * options.subscribers} channels")
    with_channels = server.create_channels(with_load.specs)
    without_channels = server.create_channels(without_load.specs)
    for channel in with_channels:
        if channel.fallback_secret is None:
            raise RuntimeError(f"channel {channel.channel_id} came back without a fallback secret")
        receiver.secrets[channel.channel_id] = channel.fallback_secret
    channel_of = {channel.key: channel.channel_id for channel in with_channels}
    result: dict[str, Any] = {
        "server": server.name,
        "workload": "user",
        "channels": len(with_channels),
        "after_seconds": options.webhook_after_seconds,
        "target_per_s": options.webhook_rate,
        "step_seconds": options.webhook_step,
        "measured_from_s": step_options(options).warmup_seconds,
        "pairs": options.webhook_pairs,
        "poll_interval_s": options.webhook_poll_interval,
        "runs": [],
    }
    channels = with_channels + without_channels
    with SubscriberPool(channels, ready_event=server.ready_event, ack=False) as pool:
        attached = pool.wait_attached()
        if attached["attached"] < len(channels):
            raise RuntimeError(f"webhooks: only {attached['attached']}/{len(channels)} attached")
        time.sleep(options.idle_seconds)
        cumulative: dict[str, int] = {}
        for pair in range(options.webhook_pairs):
            for fallbacks in (False, True) if pair % 2 == 0 else (True, False):
                where = f"{label} #{pair + 1} {'with' if fallbacks else 'without'} fallbacks"
                if fallbacks:
                    run = _with_fallbacks(
                        server,
                        receiver,
                        pool,
                        with_load,
                        channel_of,
                        cumulative,
                        options,
                        progress,
                        where,
                    )
                else:
                    mark = len(receiver.arrivals)
                    step = run_step(
                        server,
                        pool,
                        without_load,
                        options.webhook_rate,
                        cumulative,
                        step_options(options),
                        progress,
                        where,
                    )
                    run = {"fallbacks": False, "step": step, "strays": len(receiver.since(mark))}
                result["runs"].append({"pair": pair + 1, **run})
    result["without"] = figures.side([run for run in result["runs"] if not run["fallbacks"]])
    result["with"] = figures.side([run for run in result["runs"] if run["fallbacks"]])
    result["p99"] = figures.p99_verdict(
        result["without"]["p99_ms"], result["with"]["p99_ms"], WEBHOOK_P99_LIMIT_MS
    )
    result["failures"] = figures.failures(result)
    result["passed"] = not result["failures"] and bool(result["p99"]["within"])
    return result
