"""Ids and secrets: CSPRNG-generated, secrets stored only as hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time

_ALPHABET = string.ascii_lowercase + string.digits


def random_id(prefix: str, length: int = 20) -> str:
    """`<prefix>` + `length` lowercase alphanumerics (20 give ~103 bits)."""
    # One CSPRNG read, spelt in base 36: secrets.choice per character cost a system call
    # each, and ingestion assigns an id to every event.
    number = int.from_bytes(secrets.token_bytes(length))  # 8 bits each: >= 36**length
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 36)
        digits.append(_ALPHABET[digit])
    return prefix + "".join(digits)


def new_channel_id() -> str:
    return random_id("chan_")


#: The base32 digits [a-z2-7] in ASCII order, so that a time spelt with them sorts as it counts.
_SORTED_BASE32 = "234567abcdefghijklmnopqrstuvwxyz"
#: Leading characters of an assigned event id that spell the time (ms, 45 bits: to year 3084).
_TIME_CHARS = 9
#: Random characters of an assigned event id: 15 of 32 digits are 75 bits.
_RANDOM_CHARS = 15
#: A random byte -> one of the 32 digits, by its low 5 bits (256 = 8 x 32: uniform).
_BYTE_TO_DIGIT = bytes(ord(_SORTED_BASE32[value & 31]) for value in range(256))


def new_event_ids(count: int, *, now_ms: int | None = None) -> list[str]:
    """`count` server-assigned event ids: `evt_` + 24 of [a-z2-7]: 9 spelling the time in
    milliseconds, in sorting order, then 15 random ones (75 bits).

    Time first so that new ids land at the end of the event table's primary-key index: with
    random ids every event of a batch dirtied a page of its own there, and SQLite wrote each
    one to its journal at COMMIT (23% of ingestion's CPU, measured). Ids are not secrets: a
    channel's token, not the id of an event, grants access to it.
    """
    if count == 0:
        return []
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    stamp = "".join(
        _SORTED_BASE32[(millis >> (5 * shift)) & 31] for shift in range(_TIME_CHARS - 1, -1, -1)
    )
    # One CSPRNG read, a byte per random character spelt by bytes.translate (C speed:
    # base64.b32encode is pure Python in 3.11, 2% of the event loop's time at 5,000 events/s).
    text = secrets.token_bytes(_RANDOM_CHARS * count).translate(_BYTE_TO_DIGIT).decode("ascii")
    return [
        "evt_" + stamp + text[i * _RANDOM_CHARS : (i + 1) * _RANDOM_CHARS] for i in range(count)
    ]


def new_token() -> str:
    """A bearer secret: 256 bits, URL-safe, never starting with `-`: one token in 64 did,
    and `claims-realtime tail URL --token <token>` (as the README shows it) then took the
    token for an option and stopped."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def hash_secret(secret: str) -> str:
    # Tokens are 256-bit random strings, so a plain SHA-256 is enough: there is no
    # dictionary to protect against, and verification must be cheap on every connect.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
