"""Field types of our own."""

from __future__ import annotations

import functools
import json
from typing import Any

from tortoise import fields


class JSONTextField(fields.JSONField):  # type: ignore[type-arg]
    """Any JSON value, stored as ASCII JSON text.

    PostgreSQL's `jsonb` refuses two things JSON allows, `\\u0000` and unpaired surrogate
    escapes; a claim event's free-form `data` may hold either, so it is kept as text on every
    database and decoded by us.
    """

    class _db_postgres:
        SQL_TYPE = "TEXT"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("encoder", functools.partial(json.dumps, separators=(",", ":")))
        kwargs.setdefault("decoder", json.loads)
        super().__init__(**kwargs)
