"""The publisher key: configured, or generated once and kept owner-only."""

from __future__ import annotations

import dataclasses
import logging
import stat

import pytest

from claims_realtime.publisher_key import key_path, resolve_publisher_key
from claims_realtime.settings import Settings


@pytest.fixture
def generated(settings: Settings) -> Settings:
    return dataclasses.replace(settings, publisher_key=None)


def test_configured_key_wins_and_nothing_is_written(settings: Settings) -> None:
    assert resolve_publisher_key(settings) == settings.publisher_key
    assert not key_path(settings).exists()


def test_generated_once_owner_only_and_logged_by_path_not_value(
    generated: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        key = resolve_publisher_key(generated)
    path = key_path(generated)
    assert len(key) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path.resolve()) in caplog.text and key not in caplog.text
    assert resolve_publisher_key(generated) == key  # reused on the next start
