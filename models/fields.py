"""Field types of our own."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

from tortoise import fields
from tortoise.models import Model


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


#: Converts times as the models' DatetimeFields do (none of them is auto_now), for SQL written
#: by hand: bound and read back exactly as Tortoise binds and reads those fields.
_DATETIME = fields.DatetimeField()


def db_time(moment: datetime) -> Any:
    """`moment` as Tortoise converts a DatetimeField's value for the database."""
    return _DATETIME.to_db_value(moment, Model)


def python_time(value: Any) -> datetime | None:
    """A DatetimeField's value as the database gave it, as Tortoise converts it back."""
    return _DATETIME.to_python_value(value)
