"""CPU time and memory of processes, read from /proc (Linux), without extra dependencies."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int, thread: int | None = None) -> list[str] | None:
    """Fields of /proc/<pid>/stat (of one of its threads: /proc/<pid>/task/<thread>/stat)
    after the command name (which may contain spaces)."""
    path = _PROC / str(pid) if thread is None else _PROC / str(pid) / "task" / str(thread)
    try:
        raw = (path / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time so far of one process, or of one of its threads (0 if it is
    gone). A process's figure counts all its threads, ended ones too."""
    fields = _stat_fields(pid, thread)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (uvicorn --workers children and theirs)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_spawned_worker(pid: int) -> bool:
    """A process started by multiprocessing's spawn (uvicorn's workers), not one of its
    helpers (e.g. the resource tracker)."""
    try:
        command = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in command


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    return [pid, *descendants(pid)]


def rss_kb(pids: Iterable[int]) -> int:
    """Resident memory of the processes, summed (VmRSS, in KiB)."""
    total = 0
    for pid in pids:
        try:
            status = (_PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    first = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first[:8]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    total = sum(values)
    return (total - idle) / _TICKS, total / _TICKS


@dataclass
class CpuMeter:
    """CPU used by a set of processes between `start()` and `stop()`, as % of one core.

    The set is re-read at both ends so that workers spawned in between are counted; a process
    that ended in between contributes what it had used when last seen.
    """

    roots: list[int]
    _start: dict[int, float] | None = None
    _wall: float = 0.0

    def _sample(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for root in self.roots for pid in tree(root)}

    def start(self) -> None:
        self._start = self._sample()
        self._wall = time.monotonic()

    def stop(self) -> float:
        """% of one core used since start() (100 = one core busy all the time)."""
        assert self._start is not None, "start() first"
        end = self._sample()
        wall = max(1e-6, time.monotonic() - self._wall)
        used = sum(
            end.get(pid, self._start.get(pid, 0.0)) - self._start.get(pid, 0.0)
            for pid in set(end) | set(self._start)
        )
        return 100.0 * max(0.0, used) / wall


@dataclass
class MachineMeter:
    """Busy % of the whole machine (all cores) between start() and stop()."""

    _start: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self._start = machine_busy_seconds()

    def stop(self) -> float:
        busy, total = machine_busy_seconds()
        return 100.0 * (busy - self._start[0]) / max(1e-6, total - self._start[1])


@dataclass
class ThreadSplitMeter:
    """A server's CPU between `start()` and `stop()` split into its event loops (the main
    threads of the server process and of its uvicorn workers) and everything else: their
    other threads (executors, aiosqlite's) and their helper processes (SQLite's writer
    process, the webhook sender), % of one core each.

    A Python server is bound by the thread holding its interpreter lock; the split shows
    whether the event loop or the database work beside it grows with the load."""

    roots: list[int]
    _start: dict[int, tuple[float, float]] | None = None
    _wall: float = 0.0

    def _sample(self) -> dict[int, tuple[float, float]]:
        """(whole process, event loop thread) CPU seconds of each process; a helper process
        has no event loop of ours."""
        return {
            pid: (
                cpu_seconds(pid),
                cpu_seconds(pid, thread=pid)  # the main thread's id is the pid
                if pid == root or is_spawned_worker(pid)
                else 0.0,
            )
            for root in self.roots
            for pid in tree(root)
        }

    def start(self) -> None:
        self._start = self._sample()
        self._wall = time.monotonic()

    def stop(self) -> tuple[float, float]:
        """(main threads, other threads), % of one core since start()."""
        assert self._start is not None, "start() first"
        end = self._sample()
        wall = max(1e-6, time.monotonic() - self._wall)
        whole = main = 0.0
        for pid in set(end) | set(self._start):
            first = self._start.get(pid, (0.0, 0.0))
            last = end.get(pid, first)  # ended meanwhile: what it had used when last seen
            whole += last[0] - first[0]
            main += last[1] - first[1]
        return 100.0 * max(0.0, main) / wall, 100.0 * max(0.0, whole - main) / wall
