"""realtime.limits: the connect-failure limiter and once-per-connection logging."""

from __future__ import annotations

import logging

import pytest

from claims_realtime.realtime.limits import FailureLimiter, Misbehaviour, client_address
from claims_realtime.settings import DEFAULT_MAX_REQUEST_BYTES, Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_blocked_at_the_limit_and_not_before() -> None:
    limiter = FailureLimiter(3, 60.0, clock=Clock())

    for _ in range(2):
        limiter.failed("10.0.0.1")
        assert not limiter.blocked("10.0.0.1")
    limiter.failed("10.0.0.1")

    assert limiter.blocked("10.0.0.1")
    assert not limiter.blocked("10.0.0.2")


def test_a_blocked_address_recovers_once_its_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(3, 60.0, clock=clock)
    for step in range(3):
        clock.now = 1000.0 + step * 10  # failures at 1000, 1010, 1020
        limiter.failed("10.0.0.1")

    clock.now = 1059.0
    assert limiter.blocked("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(1.0)
    clock.now = 1060.0
    assert not limiter.blocked("10.0.0.1")  # the one at 1000 aged out: one more try
    assert limiter.retry_after("10.0.0.1") == 0.0
    limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1")  # ... which failed again
    clock.now = 1090.0
    assert not limiter.blocked("10.0.0.1")


def test_failures_of_a_window_long_ago_are_forgotten_entirely() -> None:
    clock = Clock()
    limiter = FailureLimiter(2, 60.0, clock=clock)
    limiter.failed("10.0.0.1")
    clock.now += 61

    assert not limiter.blocked("10.0.0.1")
    assert limiter.tracked() == 0


def test_a_limit_of_zero_disables_the_limiter() -> None:
    limiter = FailureLimiter(0, 60.0, clock=Clock())
    for _ in range(100):
        limiter.failed("10.0.0.1")

    assert not limiter.blocked("10.0.0.1")
    assert limiter.tracked() == 0


def test_the_table_of_addresses_is_bounded_dropping_the_least_recent() -> None:
    clock = Clock()
    limiter = FailureLimiter(2, 60.0, clock=clock, max_keys=100)
    limiter.failed("busy")
    for n in range(300):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
        if n % 50 == 0:
            limiter.failed("busy")  # keeps failing: recently active, never evicted
    limiter.failed("busy")

    assert limiter.tracked() <= 100
    assert limiter.blocked("busy")


def test_misbehaviour_is_logged_once_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.misbehaviour")
    noted = Misbehaviour(logger)

    with caplog.at_level(logging.WARNING, logger="test.misbehaviour"):
        assert noted.note("sid1", "sent garbage %r", b"\x00")
        assert not noted.note("sid1", "sent garbage %r", b"\x01")
        assert noted.note("sid2", "sent an unknown event %r", "boom")
        noted.forget("sid1")
        assert "sid1" not in noted

    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert "sid1" in lines[0] and "garbage" in lines[0]
    assert "sid2" in lines[1] and "boom" in lines[1]


def test_the_client_address_comes_from_the_asgi_scope_not_engineios_fixed_one() -> None:
    environ = {"REMOTE_ADDR": "127.0.0.1", "asgi.scope": {"client": ("203.0.113.7", 5555)}}

    assert client_address(environ) == "203.0.113.7"
    assert client_address({"REMOTE_ADDR": "198.51.100.2"}) == "198.51.100.2"
    assert client_address({}) == "unknown"


def test_limit_settings_are_read_and_validated() -> None:
    settings = Settings.from_env(
        {
            "MAX_REQUEST_BYTES": "2000000",
            "MAX_CHANNELS_PER_USER": "5",
            "CONNECT_FAILURE_LIMIT": "7",
            "CONNECT_FAILURE_WINDOW": "2m",
        }
    )
    assert settings.max_request_bytes == 2_000_000
    assert settings.max_channels_per_user == 5
    assert settings.connect_failure_limit == 7
    assert settings.connect_failure_window_seconds == 120.0
    defaults = Settings.from_env({})
    assert defaults.max_request_bytes == DEFAULT_MAX_REQUEST_BYTES
    assert (defaults.max_channels_per_user, defaults.connect_failure_limit) == (100, 20)
    with pytest.raises(ValueError, match="MAX_REQUEST_BYTES"):
        Settings.from_env({"MAX_REQUEST_BYTES": "1000"})  # not even one event would fit
    with pytest.raises(ValueError, match="MAX_CHANNELS_PER_USER"):
        Settings.from_env({"MAX_CHANNELS_PER_USER": "-1"})
    with pytest.raises(ValueError, match="CONNECT_FAILURE_WINDOW"):
        Settings.from_env({"CONNECT_FAILURE_WINDOW": "soon"})
