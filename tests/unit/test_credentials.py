"""Channel tokens as clients receive them."""

from __future__ import annotations

from claims_realtime.models.credentials import new_token


def test_channel_tokens_never_look_like_a_command_line_option() -> None:
    """One URL-safe token in 64 would start with `-`: in 5,000 some would."""
    tokens = [new_token() for _ in range(5_000)]
    assert not [token for token in tokens if token.startswith("-")]
    assert len(set(tokens)) == 5_000
    assert all(len(token) == 43 for token in tokens)  # 256 bits in URL-safe base64
