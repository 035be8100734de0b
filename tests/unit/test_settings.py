"""Settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from claims_realtime.handlers.app_state import HandlerSettings
from claims_realtime.settings import MIN_PUBLISHER_KEY_BYTES, Settings


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == f"sqlite://{Path('data').resolve()}/claims-realtime.sqlite3"
    assert settings.public_url is None and settings.publisher_key is None
    assert settings.redis_url is None and settings.database_pool_size == 10
    assert settings.history_max_events == 10_000
    assert settings.history_ttl_seconds == 7 * 86400
    assert settings.log_level == "INFO"


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgres://u@h:5432/d",
            "PUBLIC_URL": "https://rt.example.com/",
            "PUBLISHER_KEY": "k" * MIN_PUBLISHER_KEY_BYTES,
            "DATA_DIR": "/srv/rt",
            "HISTORY_MAX_EVENTS": "50",
            "HISTORY_TTL": "15m",
            "LOG_LEVEL": "debug",
            "REDIS_URL": "redis://r:6379/1",
            "DATABASE_POOL_SIZE": "4",
            "NODE_HEARTBEAT": "2s",
            "NODE_STALE_AFTER": "1m",
        }
    )
    assert settings.database_url == "postgres://u@h:5432/d"
    assert settings.public_url == "https://rt.example.com"
    assert settings.publisher_key == "k" * MIN_PUBLISHER_KEY_BYTES
    assert settings.data_dir == Path("/srv/rt")
    assert (settings.history_max_events, settings.history_ttl_seconds) == (50, 900)
    assert settings.log_level == "DEBUG"
    assert (settings.redis_url, settings.database_pool_size) == ("redis://r:6379/1", 4)
    assert (settings.node_heartbeat_seconds, settings.node_stale_seconds) == (2, 60)


@pytest.mark.parametrize("ttl, seconds", [("90", 90), ("90s", 90), ("2h", 7200), ("7d", 604800)])
def test_durations(ttl: str, seconds: float) -> None:
    assert Settings.from_env({"HISTORY_TTL": ttl}).history_ttl_seconds == seconds


@pytest.mark.parametrize(
    "env, message",
    [
        ({"HISTORY_MAX_EVENTS": "lots"}, "HISTORY_MAX_EVENTS must be an integer"),
        ({"HISTORY_MAX_EVENTS": "0"}, "HISTORY_MAX_EVENTS must be >= 1"),
        ({"HISTORY_TTL": "soon"}, "HISTORY_TTL must be a duration"),
        ({"HISTORY_TTL": "0"}, "HISTORY_TTL must be positive"),
        ({"PUBLIC_URL": "realtime.example.com"}, "PUBLIC_URL must start with"),
        ({"MAX_SOCKET_BACKLOG": "many"}, "MAX_SOCKET_BACKLOG must be an integer"),
        ({"MAX_SOCKET_BACKLOG": "10"}, "MAX_SOCKET_BACKLOG must be >= 100"),
    ],
)
def test_bad_values_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_max_socket_backlog() -> None:
    assert Settings().max_socket_backlog == 10_000
    assert Settings.from_env({"MAX_SOCKET_BACKLOG": "500"}).max_socket_backlog == 500


def test_publisher_key_shorter_than_32_bytes_is_refused() -> None:
    assert MIN_PUBLISHER_KEY_BYTES == 32
    with pytest.raises(ValueError, match=r"PUBLISHER_KEY must be at least 32 bytes long, got 31"):
        Settings.from_env({"PUBLISHER_KEY": "k" * 31})
    # Bytes, not characters: 16 two-byte characters are 32 bytes.
    with pytest.raises(ValueError, match=r"PUBLISHER_KEY must be at least 32 bytes long, got 30"):
        Settings.from_env({"PUBLISHER_KEY": "é" * 15})


def test_publisher_key_of_32_bytes_is_accepted() -> None:
    assert Settings.from_env({"PUBLISHER_KEY": "k" * 32}).publisher_key == "k" * 32
    assert Settings.from_env({"PUBLISHER_KEY": "é" * 16}).publisher_key == "é" * 16
    assert Settings.from_env({}).publisher_key is None  # unset: one is generated


def test_publisher_key_failure_limit() -> None:
    assert Settings.from_env({}).publisher_key_failure_limit == 20
    assert Settings.from_env({}).publisher_key_failure_window_seconds == 60
    settings = Settings.from_env(
        {"PUBLISHER_KEY_FAILURE_LIMIT": "0", "PUBLISHER_KEY_FAILURE_WINDOW": "2m"}
    )
    assert settings.publisher_key_failure_limit == 0
    assert settings.publisher_key_failure_window_seconds == 120


def test_heartbeat_and_header_bounds() -> None:
    defaults = Settings.from_env({})
    assert (defaults.ping_interval_seconds, defaults.ping_timeout_seconds) == (25, 20)
    assert (defaults.max_header_bytes, defaults.max_header_count) == (64 * 1024, 100)
    settings = Settings.from_env(
        {
            "PING_INTERVAL": "1",
            "PING_TIMEOUT": "1.5s",
            "MAX_HEADER_BYTES": "8192",
            "MAX_HEADER_COUNT": "16",
        }
    )
    assert (settings.ping_interval_seconds, settings.ping_timeout_seconds) == (1, 1.5)
    assert (settings.max_header_bytes, settings.max_header_count) == (8192, 16)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PING_INTERVAL", "0.5", "PING_INTERVAL must be at least 1 seconds"),
        ("PING_TIMEOUT", "500ms", "PING_TIMEOUT must be a duration"),
        ("PING_TIMEOUT", "-3", "PING_TIMEOUT must be positive"),
        ("MAX_HEADER_BYTES", "1024", "MAX_HEADER_BYTES must be >= 8192"),
        ("MAX_HEADER_COUNT", "10", "MAX_HEADER_COUNT must be >= 16"),
    ],
)
def test_heartbeat_and_header_bounds_are_validated(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({name: value})


def test_settings_are_what_handlers_read() -> None:
    """Handlers see the settings through a narrow Protocol (handlers do not import the
    composition layer): Settings has every member it names."""
    members = [name for name, value in vars(HandlerSettings).items() if isinstance(value, property)]
    assert members and all(hasattr(Settings(), name) for name in members)
    seen: HandlerSettings = Settings(public_url="https://rt.example.com")
    assert seen.public_url == "https://rt.example.com"
    assert seen.max_channels_per_user == 100
    assert seen.jwt_coordinator_roles == Settings().jwt_coordinator_roles


def test_the_outbox_consumer_is_off_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.outbox_url is None
    assert settings.outbox_table == "claims_realtime_outbox"
    assert (settings.outbox_poll_seconds, settings.outbox_batch_size) == (1.0, 500)


def test_outbox_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "OUTBOX_URL": "postgres://claims@db:5432/claims",
            "OUTBOX_TABLE": "claim_outbox_2",
            "OUTBOX_POLL_INTERVAL": "250",
            "OUTBOX_BATCH_SIZE": "50",
        }
    )
    assert settings.outbox_url == "postgres://claims@db:5432/claims"
    assert settings.outbox_table == "claim_outbox_2"
    assert (settings.outbox_poll_seconds, settings.outbox_batch_size) == (250, 50)
    assert Settings.from_env({"OUTBOX_URL": "postgresql://h/d"}).outbox_url == "postgresql://h/d"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"OUTBOX_URL": "sqlite:///tmp/x.sqlite3"}, "OUTBOX_URL must be a postgres:// URL"),
        ({"OUTBOX_TABLE": "Outbox"}, "OUTBOX_TABLE must be a plain lowercase SQL identifier"),
        ({"OUTBOX_TABLE": "outbox; drop table x"}, "OUTBOX_TABLE must be a plain"),
        ({"OUTBOX_TABLE": "1outbox"}, "OUTBOX_TABLE must be a plain"),
        ({"OUTBOX_TABLE": "o" * 52}, "OUTBOX_TABLE must be a plain"),
        ({"OUTBOX_POLL_INTERVAL": "0"}, "OUTBOX_POLL_INTERVAL must be positive"),
        ({"OUTBOX_BATCH_SIZE": "0"}, "OUTBOX_BATCH_SIZE must be >= 1"),
        ({"OUTBOX_BATCH_SIZE": "501"}, "OUTBOX_BATCH_SIZE must be <= 500"),
    ],
)
def test_bad_outbox_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
