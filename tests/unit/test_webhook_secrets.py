"""Webhook signing secrets sealed at rest (models.webhook_secrets): the Standard Webhooks
format, round trips, key rotation, and what an unusable key setting says."""

from __future__ import annotations

import base64

import pytest

from claims_realtime.models.webhook_secrets import (
    SecretBox,
    SecretUnreadable,
    new_sealing_key,
    new_signing_secret,
)


def test_signing_secrets_are_whsec_and_32_random_bytes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_signing_secret() != secret


def test_a_sealed_secret_opens_and_does_not_show_it() -> None:
    box = SecretBox([new_sealing_key()])
    secret = new_signing_secret()
    sealed = box.seal(secret)
    assert secret not in sealed and secret.removeprefix("whsec_") not in sealed
    assert box.open(sealed) == secret


def test_rotation_the_first_key_seals_and_any_key_opens() -> None:
    old, new = new_sealing_key(), new_sealing_key()
    sealed_before = SecretBox([old]).seal("whsec_before")
    rotated = SecretBox.from_setting(f"{new}, {old}")
    assert rotated.open(sealed_before) == "whsec_before"
    sealed_after = rotated.seal("whsec_after")
    assert SecretBox([new]).open(sealed_after) == "whsec_after"
    with pytest.raises(SecretUnreadable):
        SecretBox([old]).open(sealed_after)


def test_the_wrong_key_is_secret_unreadable() -> None:
    sealed = SecretBox([new_sealing_key()]).seal("whsec_x")
    with pytest.raises(SecretUnreadable, match="WEBHOOK_SECRET_KEY"):
        SecretBox([new_sealing_key()]).open(sealed)


@pytest.mark.parametrize("setting", ["", " , ", "not-a-key", new_sealing_key() + ",short"])
def test_a_bad_key_setting_is_a_value_error_naming_it(setting: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET_KEY"):
        SecretBox.from_setting(setting)
