"""The one place configuration is read: environment variables, with typed defaults.

Every setting is documented in README.md and `.env.example`. Tests build a `Settings`
directly (or with `Settings.from_env({...})`) instead of patching the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from claims_realtime.models.roles import DEFAULT_COORDINATOR_ROLES

DEFAULT_DATA_DIR = Path("data")
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: Below this, a single event with 16 KiB of `data` might not fit.
MIN_REQUEST_BYTES = 64 * 1024
#: A request's line and headers together, and how many headers: browsers send well under
#: 8 KiB and 30 headers; the bound keeps one request from holding megabytes before the app.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
MIN_HEADER_BYTES = 8 * 1024
DEFAULT_MAX_HEADER_COUNT = 100
MIN_HEADER_COUNT = 16
#: Engine.IO's heartbeat (python-engineio's and the reference server's defaults).
DEFAULT_PING_INTERVAL = 25.0
DEFAULT_PING_TIMEOUT = 20.0
#: Below this a heartbeat is more traffic than signal, and timers lose precision.
MIN_PING_SECONDS = 1.0
#: The publisher key is a bearer secret like JWT_SECRET: at least as long (RFC 7518 3.2).
MIN_PUBLISHER_KEY_BYTES = 32
DEFAULT_OUTBOX_TABLE = "claims_realtime_outbox"
#: ClaimEventBatch's maxItems in the OpenAPI document: the most events one batch records.
MAX_BATCH_EVENTS = 500
#: Leaves room for the `_rejected` suffix within PostgreSQL's 63-byte identifiers.
OUTBOX_TABLE_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,50}")


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def _on_off(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("on", "off"):
        raise ValueError(f"{name} must be on or off, got {raw!r}")
    return raw == "on"


def _duration(
    env: Mapping[str, str], name: str, default: float, minimum: float | None = None
) -> float:
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
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g} seconds, got {raw!r}")
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
    #: Largest request body, in bytes (413 beyond). The biggest legitimate body is a full
    #: batch: 500 events of up to 16 KiB `data` plus ids (~8.5 MiB as compact JSON); 16 MiB
    #: leaves room for whitespace and \u-escaped non-ASCII text in `data`.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    #: A request's line and headers, in bytes, and its number of headers (431 beyond).
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    #: Engine.IO heartbeat: the server pings every `ping_interval` seconds and closes a
    #: connection that has not answered within `ping_timeout` more.
    ping_interval_seconds: float = DEFAULT_PING_INTERVAL
    ping_timeout_seconds: float = DEFAULT_PING_TIMEOUT
    #: Most active (not closed) channels one `user_id` may have; 0: no limit.
    max_channels_per_user: int = 100
    #: Connect attempts with bad credentials per client address within the window, after
    #: which that address is refused (`rate_limited`) until they age out; 0: no limit.
    connect_failure_limit: int = 20
    connect_failure_window_seconds: float = 60.0
    #: Requests with a wrong `X-Publisher-Key` per client address within the window, after
    #: which that address gets 429 until they age out; 0: no limit.
    publisher_key_failure_limit: int = 20
    publisher_key_failure_window_seconds: float = 60.0
    #: How often confirmed/delivered positions are written back, and history pruned.
    flush_interval_seconds: float = 0.5
    prune_interval_seconds: float = 60.0
    #: Each process's heartbeat, and the silence after which the others presume it dead
    #: (its sockets are forgotten and its channels marked disconnected).
    node_heartbeat_seconds: float = 5.0
    node_stale_seconds: float = 20.0
    #: Packets one connection may have queued, unsent, before the server drops it as a slow
    #: consumer (see realtime.fanout.MAX_SOCKET_BACKLOG for how the default was sized).
    max_socket_backlog: int = 10_000
    #: `public` (the contract: no caller authentication) or `jwt` (bearer tokens required on
    #: the management API; see claims_realtime/auth.py and README "Authentication modes").
    auth_mode: str = "public"
    #: HS256 shared secret, or RS256 public key (PEM text): exactly one in jwt mode.
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    #: Required `aud` / `iss` claims, when set.
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: Roles in an organisation that may own organisation channels.
    jwt_coordinator_roles: tuple[str, ...] = DEFAULT_COORDINATOR_ROLES
    #: Browser origins allowed to call the API and open sockets (empty: same origin only).
    cors_allowed_origins: tuple[str, ...] = ()
    #: `text` (human-readable lines) or `json` (one JSON object per line).
    log_format: str = "text"
    #: FAST_PATHS: False serves every part through its libraries' stock code (our faster
    #: paths over their internals off; see claims_realtime.realtime.fastpaths).
    fast_paths: bool = True
    #: Fernet keys (comma-separated; the first encrypts, all decrypt) for the webhook signing
    #: secrets at rest; None means "generate one under data_dir".
    webhook_secret_key: str | None = None
    #: Hosts a fallback URL may name over plain http and at private or loopback addresses.
    webhook_allowed_hosts: tuple[str, ...] = ()
    #: Connect + read timeout of one webhook request.
    webhook_timeout_seconds: float = 5.0
    #: Webhook requests in flight at once, per process (one per channel at a time).
    webhook_concurrency: int = 32
    #: How often due webhooks are looked for (the most they run late, plus the flush).
    webhook_poll_seconds: float = 1.0
    #: How long a webhook is retried before it is kept as a final failure.
    webhook_retry_for_seconds: float = 86400.0
    #: PostgreSQL holding the transactional outbox (postgres://...); None: no consumer.
    outbox_url: str | None = None
    #: The outbox table (its rejected rows go to `<table>_rejected`, its NOTIFY channel is
    #: named the same); a plain SQL identifier, since it is spliced into statements.
    outbox_table: str = DEFAULT_OUTBOX_TABLE
    #: How often the outbox is read without a NOTIFY (the most a lost one delays an event).
    outbox_poll_seconds: float = 1.0
    #: Outbox rows read, validated and recorded per transaction.
    outbox_batch_size: int = 500

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (default: `os.environ`)."""
        env = os.environ if env is None else env
        # Each default is the field's own: written once, in the class above.
        default: dict[str, Any] = {field.name: field.default for field in fields(cls)}
        data_dir = Path(env.get("DATA_DIR", "").strip() or default["data_dir"])
        database_url = env.get("DATABASE_URL", "").strip() or default_database_url(data_dir)
        public_url = env.get("PUBLIC_URL", "").strip().rstrip("/") or None
        if public_url and public_url.split("://", 1)[0] not in ("http", "https", "ws", "wss"):
            raise ValueError(
                f"PUBLIC_URL must start with http(s):// or ws(s)://, got {public_url!r}"
            )
        return cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL", "").strip() or None,
            database_pool_size=_int(
                env, "DATABASE_POOL_SIZE", default["database_pool_size"], minimum=1
            ),
            public_url=public_url,
            log_level=env.get("LOG_LEVEL", "").strip().upper() or default["log_level"],
            data_dir=data_dir,
            publisher_key=_publisher_key(env),
            history_max_events=_int(
                env, "HISTORY_MAX_EVENTS", default["history_max_events"], minimum=1
            ),
            history_ttl_seconds=_duration(env, "HISTORY_TTL", default["history_ttl_seconds"]),
            node_heartbeat_seconds=_duration(
                env, "NODE_HEARTBEAT", default["node_heartbeat_seconds"]
            ),
            node_stale_seconds=_duration(env, "NODE_STALE_AFTER", default["node_stale_seconds"]),
            max_request_bytes=_int(
                env, "MAX_REQUEST_BYTES", default["max_request_bytes"], minimum=MIN_REQUEST_BYTES
            ),
            max_header_bytes=_int(
                env, "MAX_HEADER_BYTES", default["max_header_bytes"], minimum=MIN_HEADER_BYTES
            ),
            max_header_count=_int(
                env, "MAX_HEADER_COUNT", default["max_header_count"], minimum=MIN_HEADER_COUNT
            ),
            ping_interval_seconds=_duration(
                env, "PING_INTERVAL", default["ping_interval_seconds"], minimum=MIN_PING_SECONDS
            ),
            ping_timeout_seconds=_duration(
                env, "PING_TIMEOUT", default["ping_timeout_seconds"], minimum=MIN_PING_SECONDS
            ),
            max_channels_per_user=_int(
                env, "MAX_CHANNELS_PER_USER", default["max_channels_per_user"]
            ),
            connect_failure_limit=_int(
                env, "CONNECT_FAILURE_LIMIT", default["connect_failure_limit"]
            ),
            connect_failure_window_seconds=_duration(
                env, "CONNECT_FAILURE_WINDOW", default["connect_failure_window_seconds"]
            ),
            publisher_key_failure_limit=_int(
                env, "PUBLISHER_KEY_FAILURE_LIMIT", default["publisher_key_failure_limit"]
            ),
            publisher_key_failure_window_seconds=_duration(
                env, "PUBLISHER_KEY_FAILURE_WINDOW", default["publisher_key_failure_window_seconds"]
            ),
            max_socket_backlog=_int(
                env, "MAX_SOCKET_BACKLOG", default["max_socket_backlog"], minimum=100
            ),
            fast_paths=_on_off(env, "FAST_PATHS", default["fast_paths"]),
            **_access_settings(env, default),
            **_webhook_settings(env, default),
            **_outbox_settings(env, default),
        )

    def with_defaults(self) -> Settings:
        """Fill the database URL when a `Settings()` was built without one."""
        if self.database_url:
            return self
        return replace(self, database_url=default_database_url(self.data_dir))


def default_database_url(data_dir: Path) -> str:
    """The zero-setup default: a SQLite file under the data directory."""
    return f"sqlite://{(data_dir / 'claims-realtime.sqlite3').resolve()}"


def _publisher_key(env: Mapping[str, str]) -> str | None:
    key = env.get("PUBLISHER_KEY", "").strip() or None
    if key is not None and len(key.encode()) < MIN_PUBLISHER_KEY_BYTES:
        raise ValueError(
            f"PUBLISHER_KEY must be at least {MIN_PUBLISHER_KEY_BYTES} bytes long, got "
            f"{len(key.encode())} (leave it unset to have one generated)"
        )
    return key


AUTH_MODES = ("public", "jwt")
LOG_FORMATS = ("text", "json")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
#: PyJWT warns below this for HS256 (RFC 7518 3.2: a key at least as long as the hash).
MIN_JWT_SECRET_BYTES = 32


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _pem(env: Mapping[str, str], name: str) -> str | None:
    """PEM text, or a path to a file holding it."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if raw.startswith("-----BEGIN"):
        return raw.replace("\\n", "\n")
    path = Path(raw)
    if not path.is_file():
        raise ValueError(f"{name} must be PEM text or the path of a PEM file, got {raw!r}")
    return path.read_text()


def _access_settings(env: Mapping[str, str], default: Mapping[str, Any]) -> dict[str, Any]:
    """AUTH_MODE and JWT_*, CORS_ALLOWED_ORIGINS and LOG_FORMAT, checked together
    (`default`: the Settings fields' defaults, by field name)."""
    auth_mode = env.get("AUTH_MODE", "").strip().lower() or default["auth_mode"]
    if auth_mode not in AUTH_MODES:
        raise ValueError(f"AUTH_MODE must be one of {', '.join(AUTH_MODES)}, got {auth_mode!r}")
    secret = env.get("JWT_SECRET", "").strip() or None
    public_key = _pem(env, "JWT_PUBLIC_KEY")
    if auth_mode == "jwt":
        if (secret is None) == (public_key is None):
            raise ValueError("AUTH_MODE=jwt needs exactly one of JWT_SECRET or JWT_PUBLIC_KEY")
        if secret is not None and len(secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(f"JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long")
    roles = _list(env, "JWT_COORDINATOR_ROLES") or default["jwt_coordinator_roles"]
    origins = _list(env, "CORS_ALLOWED_ORIGINS")
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ValueError(
                "CORS_ALLOWED_ORIGINS must list origins like https://app.example.com "
                f"(scheme and host, no path) or *, got {origin!r}"
            )
    log_format = env.get("LOG_FORMAT", "").strip().lower() or default["log_format"]
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    return {
        "auth_mode": auth_mode,
        "jwt_secret": secret,
        "jwt_public_key": public_key,
        "jwt_audience": env.get("JWT_AUDIENCE", "").strip() or None,
        "jwt_issuer": env.get("JWT_ISSUER", "").strip() or None,
        "jwt_coordinator_roles": roles,
        "cors_allowed_origins": origins,
        "log_format": log_format,
    }


_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")


def _webhook_settings(env: Mapping[str, str], default: Mapping[str, Any]) -> dict[str, Any]:
    """WEBHOOK_*: the fallback webhooks' delivery and safety settings."""
    hosts = tuple(host.lower() for host in _list(env, "WEBHOOK_ALLOWED_HOSTS"))
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise ValueError(
                f"WEBHOOK_ALLOWED_HOSTS must list host names or addresses, got {host!r}"
            )
    return {
        "webhook_secret_key": env.get("WEBHOOK_SECRET_KEY", "").strip() or None,
        "webhook_allowed_hosts": hosts,
        "webhook_timeout_seconds": _duration(
            env, "WEBHOOK_TIMEOUT", default["webhook_timeout_seconds"]
        ),
        "webhook_concurrency": _int(
            env, "WEBHOOK_CONCURRENCY", default["webhook_concurrency"], minimum=1
        ),
        "webhook_poll_seconds": _duration(
            env, "WEBHOOK_POLL_INTERVAL", default["webhook_poll_seconds"]
        ),
        "webhook_retry_for_seconds": _duration(
            env, "WEBHOOK_RETRY_FOR", default["webhook_retry_for_seconds"]
        ),
    }


def _outbox_settings(env: Mapping[str, str], default: Mapping[str, Any]) -> dict[str, Any]:
    """OUTBOX_*: the transactional outbox consumer (off unless OUTBOX_URL is set)."""
    url = env.get("OUTBOX_URL", "").strip() or None
    if url is not None and url.split("://", 1)[0] not in ("postgres", "postgresql"):
        raise ValueError(f"OUTBOX_URL must be a postgres:// URL, got {url.split('://', 1)[0]!r}")
    table = env.get("OUTBOX_TABLE", "").strip() or default["outbox_table"]
    if not OUTBOX_TABLE_PATTERN.fullmatch(table):
        raise ValueError(
            "OUTBOX_TABLE must be a plain lowercase SQL identifier "
            f"([a-z_][a-z0-9_]*, at most 51 characters), got {table!r}"
        )
    return {
        "outbox_url": url,
        "outbox_table": table,
        "outbox_poll_seconds": _duration(
            env, "OUTBOX_POLL_INTERVAL", default["outbox_poll_seconds"]
        ),
        # At most what one `POST /claim-events/batch` may carry: a run is one such batch.
        "outbox_batch_size": _int(
            env,
            "OUTBOX_BATCH_SIZE",
            default["outbox_batch_size"],
            minimum=1,
            maximum=MAX_BATCH_EVENTS,
        ),
    }
