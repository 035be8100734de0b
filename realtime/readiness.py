"""What `GET /health/ready` reports: each dependency's state, and which of them this process
cannot serve without."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ReadinessCheck:
    """A further check: its state now, and whether `unavailable` makes this process not
    ready (a check merely reported, as the outbox's, is not `required`)."""

    state: Callable[[], str]
    required: bool


@dataclass(frozen=True)
class Readiness:
    """Every check's state, and the required ones that are `unavailable`, sorted."""

    checks: dict[str, str]
    failing: list[str]


def combine(required: Mapping[str, str], further: Mapping[str, ReadinessCheck]) -> Readiness:
    """`required`: states of the dependencies every process needs; `further`: the others."""
    checks = dict(required)
    failing = [name for name, state in required.items() if state == "unavailable"]
    for name, check in further.items():
        checks[name] = check.state()
        if check.required and checks[name] == "unavailable":
            failing.append(name)
    return Readiness(checks, sorted(failing))
