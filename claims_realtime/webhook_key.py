"""The keys that seal fallback webhook secrets at rest: WEBHOOK_SECRET_KEY, or one generated
once under DATA_DIR; and the policy built from them that setting a fallback (and sending one)
goes by."""

from __future__ import annotations

from pathlib import Path

from claims_realtime.key_files import read_or_create
from claims_realtime.models.fallbacks import WebhookPolicy
from claims_realtime.models.webhook_secrets import SecretBox, new_sealing_key
from claims_realtime.settings import Settings

KEY_FILE = "webhook-secret.key"


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def resolve_sealing_keys(settings: Settings) -> str:
    """The configured keys, else the stored one, else a new one stored owner-only (0600)."""
    if settings.webhook_secret_key:
        return settings.webhook_secret_key
    return read_or_create(key_path(settings), new_sealing_key, "WEBHOOK_SECRET_KEY")


def webhook_policy(settings: Settings) -> WebhookPolicy:
    """The sealing keys and trusted hosts; ValueError naming where a bad key came from."""
    keys = resolve_sealing_keys(settings)
    try:
        box = SecretBox.from_setting(keys)
    except ValueError as exc:
        if settings.webhook_secret_key:
            raise
        raise ValueError(
            f"{key_path(settings)}: {exc} (delete the file to have a new key generated, "
            "which makes the secrets it sealed unreadable, or set WEBHOOK_SECRET_KEY)"
        ) from None
    return WebhookPolicy(box, settings.webhook_allowed_hosts)
