"""Which unavailable dependency makes a process not ready, and which is only reported."""

from __future__ import annotations

from claims_realtime.realtime.readiness import ReadinessCheck, combine


def test_a_reported_check_never_fails_readiness_and_a_required_one_does() -> None:
    further = {
        "outbox": ReadinessCheck(lambda: "unavailable", required=False),
        "search": ReadinessCheck(lambda: "unavailable", required=True),
        "cache": ReadinessCheck(lambda: "ok", required=True),
    }
    readiness = combine({"redis": "unavailable", "database": "ok"}, further)
    assert readiness.checks == {
        "redis": "unavailable",
        "database": "ok",
        "outbox": "unavailable",
        "search": "unavailable",
        "cache": "ok",
    }
    assert readiness.failing == ["redis", "search"]


def test_everything_ok_or_not_configured_is_ready() -> None:
    readiness = combine({"database": "ok", "redis": "not_configured"}, {})
    assert readiness.failing == []
