"""History readers for `--mode history`: clients paging `listChannelEvents` while deliveries run.

Each reader picks a channel at random and pages it from `after_sequence=0` to the head,
`limit` events a page, then starts again on another; every page is checked (`check_page`), so
paging that skips or repeats an event shows up as a violation, not as a faster figure. The
readers run in a thread of the benchmark's own process, on their own event loop: apart from the
server, and measured apart from the load generator (the thread's CPU time).
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

#: Problems kept verbatim per run; the rest are only counted.
SAMPLES = 5
STOP_TIMEOUT_S = 60.0


def check_page(channel_id: str, after: int, limit: int, body: dict[str, Any]) -> list[str]:
    """What is wrong with one page of `channel_id` read after `after` (empty: nothing).

    Paging on from `next_after_sequence` must see every kept event exactly once, in order: a
    page starts right after `after` (or after what retention lost, `unavailable`), its
    sequences follow one another, none lies beyond the head, and it says there is more only
    when it is full and short of the head, and no more only once it reached the head.
    """
    problems: list[str] = []
    data = body["data"]
    head = int(body["head_sequence"])
    unavailable = int(body["unavailable"])
    if unavailable < 0:
        problems.append(f"after {after}: unavailable {unavailable} < 0")
    start = after + max(0, unavailable)
    sequences = [int(event["sequence"]) for event in data]
    if len(sequences) > limit:
        problems.append(f"after {after}: {len(sequences)} events on a page of {limit}")
    if sequences != list(range(start + 1, start + 1 + len(sequences))):
        shown = sequences if len(sequences) <= 4 else [*sequences[:2], "...", *sequences[-2:]]
        problems.append(f"after {after}: sequences {shown}, not from {start + 1} one by one")
    if any(event.get("channel_id") != channel_id for event in data):
        problems.append(f"after {after}: an event of another channel")
    last = sequences[-1] if sequences else start
    if last > head:
        problems.append(f"after {after}: sequence {last} beyond head {head}")
    next_after = body["next_after_sequence"]
    if next_after is None:
        if last < head:
            problems.append(f"after {after}: no next page, but the page ended at {last} < {head}")
    elif int(next_after) != last or len(sequences) != limit:
        problems.append(
            f"after {after}: next_after_sequence {next_after} after a page of "
            f"{len(sequences)} ending at {last}"
        )
    return problems


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (`fraction` 0.99 for p99); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class _Tally:
    pages: int = 0
    full_pages: int = 0
    events: int = 0
    #: Reads that reached the head.
    passes: int = 0
    unavailable: int = 0
    http_errors: int = 0
    violations: int = 0
    samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.samples) < SAMPLES:
            self.samples.append(text)


class HistoryReaders:
    """`readers` concurrent readers of `channel_ids` while in the `with` block.

    `pages_per_s` paces them (all together); None lets each read as fast as it can, the next
    page asked for as soon as the last one arrived.
    """

    def __init__(
        self,
        base_url: str,
        channel_ids: Sequence[str],
        *,
        readers: int,
        limit: int,
        pages_per_s: float | None = None,
    ) -> None:
        self.base_url = base_url
        self.channel_ids = list(channel_ids)
        self.readers = readers
        self.limit = limit
        self.pages_per_s = pages_per_s
        self._tally = _Tally()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-readers", daemon=True)
        self._wall_s = 0.0
        self._cpu_s = 0.0
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        self._started.wait(STOP_TIMEOUT_S)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(STOP_TIMEOUT_S)

    def figures(self) -> dict[str, Any]:
        """What the readers did, once the block is left."""
        if self._error is not None:
            raise RuntimeError(f"history readers failed: {self._error!r}") from self._error
        tally, wall = self._tally, max(1e-6, self._wall_s)
        return {
            "readers": self.readers,
            "channels": len(self.channel_ids),
            "page_limit": self.limit,
            "pages_per_s_target": self.pages_per_s,
            "seconds": self._wall_s,
            "pages": tally.pages,
            "full_pages": tally.full_pages,
            "events": tally.events,
            "passes_to_head": tally.passes,
            "pages_per_s": tally.pages / wall,
            "full_pages_per_s": tally.full_pages / wall,
            "events_per_s": tally.events / wall,
            "page_p50_ms": percentile(tally.latencies_ms, 0.50),
            "page_p99_ms": percentile(tally.latencies_ms, 0.99),
            "page_max_ms": max(tally.latencies_ms, default=None),
            # Retention had dropped these before a reader got there: reported, not a violation.
            "unavailable": tally.unavailable,
            "http_errors": tally.http_errors,
            "violations": tally.violations,
            "violation_samples": tally.samples,
            # The readers' thread, % of one core: what reading cost the generator's machine.
            "reader_cpu_pct": 100.0 * self._cpu_s / wall,
        }

    def _run(self) -> None:
        cpu = time.thread_time()
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by figures(), in the caller's thread
            self._error = exc
        finally:
            self._started.set()
            self._cpu_s = time.thread_time() - cpu

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.readers)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as http:
            started = time.monotonic()
            self._started.set()
            await asyncio.gather(*(self._reader(http, index) for index in range(self.readers)))
            self._wall_s = time.monotonic() - started

    async def _reader(self, http: httpx.AsyncClient, index: int) -> None:
        rng = random.Random(index)
        interval = self.readers / self.pages_per_s if self.pages_per_s else 0.0
        due = time.monotonic()
        while not self._stop.is_set():
            channel_id = rng.choice(self.channel_ids)
            after = 0
            while not self._stop.is_set():
                if interval:
                    due += interval
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                next_after = await self._page(http, channel_id, after)
                if next_after is None:
                    break
                after = next_after

    async def _page(self, http: httpx.AsyncClient, channel_id: str, after: int) -> int | None:
        """Read one page and tally it: the next `after`, or None when this read is over."""
        tally = self._tally
        started = time.perf_counter()
        try:
            response = await http.get(
                f"/api/v1/realtime-subscriptions/{channel_id}/events",
                params={"after_sequence": after, "limit": self.limit},
            )
        except httpx.HTTPError as exc:
            await self._failed(f"{channel_id} after {after}: {exc!r}")
            return None
        if response.status_code != 200:
            await self._failed(
                f"{channel_id} after {after}: HTTP {response.status_code}: {response.text[:200]}"
            )
            return None
        tally.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        body = response.json()
        problems = check_page(channel_id, after, self.limit, body)
        tally.pages += 1
        tally.events += len(body["data"])
        tally.full_pages += int(len(body["data"]) == self.limit)
        tally.unavailable += max(0, int(body["unavailable"]))
        if problems:
            tally.violations += len(problems)
            for problem in problems:
                tally.problem(f"{channel_id} {problem}")
            return None  # start a fresh read rather than page on from a broken one
        if body["next_after_sequence"] is None:
            tally.passes += 1
            return None
        return int(body["next_after_sequence"])

    async def _failed(self, problem: str) -> None:
        self._tally.http_errors += 1
        self._tally.problem(problem)
        await asyncio.sleep(0.1)  # no tight loop against a failing server
