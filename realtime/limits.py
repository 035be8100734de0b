"""Defences against hostile or broken Socket.IO clients, kept in memory.

    FailureLimiter    connect attempts with bad credentials, per client address
    Misbehaviour      what a connection did wrong, logged once per connection

Each process keeps its own tables. Behind several processes the hub also announces every
bad-credential failure through the broker (realtime.relay), so each process counts the
failures of all: an address gets the limit once, not once per process. While Redis is
down each process counts only its own, still a bound.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Bad-credential connect attempts allowed per address within the window (seconds).
DEFAULT_CONNECT_FAILURE_LIMIT = 20
DEFAULT_CONNECT_FAILURE_WINDOW = 60.0
#: Most addresses tracked at once: beyond it the quietest are forgotten, so a client
#: cycling through addresses cannot grow the table without bound.
MAX_TRACKED_ADDRESSES = 10_000


class FailureLimiter:
    """A sliding window of failures per key (a client address).

    `blocked(key)` is the constant-cost check made before any credential is looked at;
    `failed(key)` records one failure. A key is blocked while `limit` failures lie within
    the last `window` seconds, so it recovers by itself once the oldest ones age out.
    A limit of 0 disables the limiter.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        #: Failure times per key, oldest first; at most `limit` are kept (more never matter).
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, key: str) -> bool:
        if self.limit <= 0:
            return False
        times = self._failures.get(key)
        if times is None:
            return False
        self._expire(key, times)
        return len(times) >= self.limit

    def failed(self, key: str) -> None:
        if self.limit <= 0:
            return
        times = self._failures.pop(key, None)
        if times is None:
            times = deque(maxlen=self.limit)
            if len(self._failures) >= self._max_keys:
                self._evict()
        times.append(self._clock())
        self._failures[key] = times  # re-inserted: dict order is least recently failed first

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again (0 when it is not blocked)."""
        if not self.blocked(key):
            return 0.0
        return max(0.0, self._failures[key][0] + self.window - self._clock())

    def _expire(self, key: str, times: deque[float]) -> None:
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]

    def _evict(self) -> None:
        """Drop expired keys; if none were, the least recently failing tenth."""
        for key, times in list(self._failures.items()):
            self._expire(key, times)
        excess = len(self._failures) - self._max_keys + 1
        if excess > 0:
            for key in list(self._failures)[: max(excess, self._max_keys // 10)]:
                del self._failures[key]

    def tracked(self) -> int:
        """How many addresses have failures on record (not a __len__: an empty limiter
        must not be falsy)."""
        return len(self._failures)


class Misbehaviour:
    """Logs what a connection does wrong, once per connection: a client flooding garbage
    must not flood the log too. `forget` when the connection ends."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._logger = logger
        self._noted: set[str] = set()

    def note(self, connection: str, what: str, *args: Any) -> bool:
        """Log `what` (a %-format) for `connection` unless one was logged already; True
        when this was the connection's first."""
        if connection in self._noted:
            return False
        self._noted.add(connection)
        self._logger.warning(
            "hostile or broken client %s: " + what + " (further ones are not logged)",
            connection,
            *args,
        )
        return True

    def forget(self, connection: str) -> None:
        self._noted.discard(connection)

    def __contains__(self, connection: object) -> bool:
        return connection in self._noted


def scope_address(scope: Any) -> str | None:
    """The peer's address from an ASGI scope (after uvicorn's --proxy-headers when behind a
    trusted proxy); the port is left out: each connection has its own."""
    client = scope.get("client")
    return str(client[0]) if client else None


def client_address(environ: dict[str, Any]) -> str:
    """The peer's address from an Engine.IO environ (python-engineio's ASGI driver fixes
    REMOTE_ADDR at 127.0.0.1; the ASGI scope has the real one)."""
    address = scope_address(environ.get("asgi.scope") or {})
    return address or str(environ.get("REMOTE_ADDR") or "unknown")
