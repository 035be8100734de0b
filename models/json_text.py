"""Compact ASCII JSON text, as `json.dumps(value, separators=(",", ":"))` writes it.

orjson writes the same text over ten times faster (docs/performance-log.md#the-delivery-path),
except where the two differ (docs/architecture.md, "orjson 3.13"); there the standard library
writes it, so stored `data` and the frames built from it stay byte for byte what they were.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_COMPACT = json.JSONEncoder(separators=(",", ":"))

#: What orjson writes its own way and json refuses or writes as its type says (a datetime, a
#: dataclass, a subclass of str or dict): handed back, so json decides as before.
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def compact_json(value: Any) -> str:
    """`value` (as JSON decodes: dicts, lists, strings, numbers, booleans, None) as compact
    ASCII JSON text, exactly `json.dumps`'s."""
    try:
        encoded = orjson.dumps(value, option=_PASSTHROUGH)
    except TypeError:  # refused: integers past 64 bits, lone surrogates, deep nesting, the above
        return _COMPACT.encode(value)
    # Where orjson's text may differ: non-ASCII (json escapes it, orjson writes UTF-8); DEL
    # (the same); floats under 1e-4 (json writes `1e-05`, orjson `0.00001` or `1e-5`); NaN and
    # infinities (json writes `NaN`, orjson `null`). Plain substrings, tested one by one (a
    # loop over them cost more than the encoding): a string or a null holding one only costs
    # the slower path.
    if (
        not encoded.isascii()
        or b"\x7f" in encoded
        or b"e-" in encoded
        or b"0.0000" in encoded
        or b"null" in encoded
    ):
        return _COMPACT.encode(value)
    return encoded.decode("ascii")
