"""The keys sealing webhook secrets: configured, or generated once and kept owner-only; a bad
one stops the app from being built rather than failing each request."""

from __future__ import annotations

import dataclasses
import stat

import pytest

from claims_realtime.app import create_app
from claims_realtime.models.webhook_secrets import new_sealing_key
from claims_realtime.settings import Settings
from claims_realtime.webhook_key import key_path, webhook_policy


def test_generated_once_owner_only_and_reused(settings: Settings) -> None:
    settings = dataclasses.replace(settings, webhook_secret_key=None)
    sealed = webhook_policy(settings).box.seal("whsec_x")
    path = key_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert webhook_policy(settings).box.open(sealed) == "whsec_x"  # the next start reads it


def test_configured_keys_win_nothing_written_and_allowed_hosts_carried(
    settings: Settings,
) -> None:
    configured = dataclasses.replace(
        settings,
        webhook_secret_key=f"{new_sealing_key()},{new_sealing_key()}",
        webhook_allowed_hosts=("127.0.0.1",),
    )
    policy = webhook_policy(configured)
    assert policy.allowed_hosts == ("127.0.0.1",)
    assert not key_path(settings).exists()


def test_a_bad_configured_key_stops_the_app_being_built(settings: Settings) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET_KEY must be Fernet keys"):
        create_app(dataclasses.replace(settings, webhook_secret_key="not-a-fernet-key"))


def test_a_damaged_key_file_names_the_file(settings: Settings) -> None:
    settings = dataclasses.replace(settings, webhook_secret_key=None)
    path = key_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text("damaged\n")
    with pytest.raises(ValueError, match=str(path)):
        webhook_policy(settings)
