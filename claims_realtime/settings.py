"""The one place configuration is read: environment variables, with typed defaults.

Every setting is documented in README.md and `.env.example`. Tests build a `Settings`
directly (or with `Settings.from_env({...})`) instead of patching the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_DATA_DIR = Path("data")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    """Seconds, or a number with a unit suffix: `90s`, `15m`, `12h`, `7d`."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    scale = units.get(raw[-1], 1)
    number = raw[:-1] if raw[-1] in units else raw
    try:
        value = float(number) * scale
    except ValueError:
        raise ValueError(f"{name} must be a duration like 3600, 15m or 7d, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one server process."""

    #: Tortoise URL: sqlite:///abs/path.sqlite3, sqlite://:memory:, postgres://user@host:5432/db
    database_url: str = ""
    #: Redis for fan-out across server processes; None: one process, in-process fan-out.
    redis_url: str | None = None
    #: Most connections one process opens to PostgreSQL.
    database_pool_size: int = 10
    #: Externally visible base URL (http/https/ws/wss); None derives it from each request.
    public_url: str | None = None
    log_level: str = "INFO"
    #: Where the default SQLite file and the generated publisher key live.
    data_dir: Path = DEFAULT_DATA_DIR
    #: Shared secret for the ingestion API; None means "generate one under data_dir".
    publisher_key: str | None = None
    #: Per-channel history bounds: beyond these, old events are pruned.
    history_max_events: int = 10_000
    history_ttl_seconds: float = 7 * 86400.0
    #: Largest accepted `data` object of one claim event, in bytes of compact JSON.
    max_event_data_bytes: int = 16 * 1024
    #: How often confirmed/delivered positions are written back, and history pruned.
    flush_interval_seconds: float = 0.5
    prune_interval_seconds: float = 60.0
    #: Each process's heartbeat, and the silence after which the others presume it dead
    #: (its sockets are forgotten and its channels marked disconnected).
    node_heartbeat_seconds: float = 5.0
    node_stale_seconds: float = 20.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (default: `os.environ`)."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("DATA_DIR", "").strip() or DEFAULT_DATA_DIR)
        database_url = env.get("DATABASE_URL", "").strip() or default_database_url(data_dir)
        public_url = env.get("PUBLIC_URL", "").strip().rstrip("/") or None
        if public_url and public_url.split("://", 1)[0] not in ("http", "https", "ws", "wss"):
            raise ValueError(
                f"PUBLIC_URL must start with http(s):// or ws(s)://, got {public_url!r}"
            )
        return cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL", "").strip() or None,
            database_pool_size=_int(env, "DATABASE_POOL_SIZE", 10, minimum=1),
            public_url=public_url,
            log_level=env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO",
            data_dir=data_dir,
            publisher_key=env.get("PUBLISHER_KEY", "").strip() or None,
            history_max_events=_int(env, "HISTORY_MAX_EVENTS", 10_000, minimum=1),
            history_ttl_seconds=_duration(env, "HISTORY_TTL", 7 * 86400.0),
            node_heartbeat_seconds=_duration(env, "NODE_HEARTBEAT", 5.0),
            node_stale_seconds=_duration(env, "NODE_STALE_AFTER", 20.0),
        )

    def with_defaults(self) -> Settings:
        """Fill the database URL when a `Settings()` was built without one."""
        if self.database_url:
            return self
        return replace(self, database_url=default_database_url(self.data_dir))


def default_database_url(data_dir: Path) -> str:
    """The zero-setup default: a SQLite file under the data directory."""
    return f"sqlite://{(data_dir / 'claims-realtime.sqlite3').resolve()}"
