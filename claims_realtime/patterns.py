"""The OpenAPI document's `pattern`s read as ECMA-262 reads them, in Python.

Every `pattern` of the document is ECMA-262 (what JavaScript clients, Swagger UI and
Schemathesis read), where a closing `$` means the end of the string; Python's `re.search`
also lets `$` match before a final newline, so `"usr_1\\n"` would pass `^[A-Za-z0-9]...$`
and name a different user. The validators here read `$` as `\\Z`.
"""

from __future__ import annotations

import functools
import re
import typing as t

from connexion.json_schema import Draft4RequestValidator
from jsonschema import Draft4Validator, ValidationError
from jsonschema.validators import extend


def ecma_pattern(pattern: str) -> str:
    """An ECMA-262 regular expression (no flags) as Python `re` must spell it to mean the
    same: every `$` outside a character class becomes `\\Z`, the end of the string (Python's
    `$` also matches before a final newline; ECMA-262's, without the m flag, does not)."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return "".join(out)


@functools.lru_cache(maxsize=512)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` (ECMA-262) compiled with ECMA-262's meaning; `.search` it, as JSON Schema's
    `pattern` keyword does."""
    return re.compile(ecma_pattern(pattern))


def _pattern(validator: t.Any, pattern: str, instance: t.Any, schema: t.Any) -> t.Iterator[t.Any]:
    """jsonschema's `pattern` keyword, reading the pattern as ECMA-262 (the message quotes
    the pattern as the document spells it)."""
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Connexion's Draft 4 validators (request bodies, parameters) with ECMA-262 patterns.
RequestBodySchemaValidator = extend(Draft4RequestValidator, {"pattern": _pattern})
ParameterSchemaValidator = extend(Draft4Validator, {"pattern": _pattern})
