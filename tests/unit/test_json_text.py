"""compact_json writes exactly json.dumps's compact text, through orjson where the two agree."""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

import pytest

from claims_realtime.models import json_text
from claims_realtime.models.json_text import compact_json


def stdlib(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def random_doubles(count: int, seed: int) -> list[float]:
    """Finite doubles from every bit pattern, half of them scaled into everyday ranges."""
    rng = random.Random(seed)
    found: list[float] = []
    while len(found) < count:
        (value,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if not math.isfinite(value):
            continue
        if rng.random() < 0.5:
            value = value % 1e6 * rng.choice([1e-12, 1e-6, 1e-3, 1.0, 1e3, 1e12])
        found.append(value)
    return found


def test_every_float_is_written_as_json_writes_it() -> None:
    values = random_doubles(50_000, seed=26)
    values += [10.0**e for e in range(-30, 30)] + [1.234 * 10.0**e for e in range(-30, 30)]
    values += [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1, 1e-4, 1e-5, 1e16, 1e22]
    for value in values:
        assert compact_json(value) == stdlib(value), value
    assert compact_json(values) == stdlib(values)


@pytest.mark.parametrize(
    "value",
    [
        "".join(chr(i) for i in range(128)),  # control characters, quotes, DEL
        "café ☕ 𝄞",  # escaped as \\u, surrogate pairs for the last
        "\u2028\u2029",
        "\ud800 lone",  # a lone surrogate: orjson refuses it
        2**64,  # past orjson's integers
        -(2**63) - 1,
        [2**63 - 1, -(2**63), 2**53 + 1],
        float("nan"),  # json writes NaN, orjson null
        [float("inf"), float("-inf")],
        {"nested": [{"a": None, "b": True, "c": False}, [], {}], "e-mail": "0.0000"},
        {"deep": json.loads("[" * 300 + "]" * 300)},  # past orjson's nesting limit
    ],
)
def test_values_orjson_writes_otherwise_are_written_as_json_writes_them(value: Any) -> None:
    assert compact_json(value) == stdlib(value)


def test_a_value_json_refuses_is_refused() -> None:
    with pytest.raises(TypeError):
        compact_json({"when": object()})


def test_everyday_data_takes_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoStdlib:
        def encode(self, value: Any) -> str:
            raise AssertionError(f"json wrote {value!r}")

    monkeypatch.setattr(json_text, "_COMPACT", NoStdlib())
    data = {"status": "approved", "amount": 1234.56, "lines": [1, 2, 3], "ok": True, "by": "a/b"}
    assert compact_json(data) == stdlib(data)
