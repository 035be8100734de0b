"""The AsyncAPI document of the Socket.IO side (openapi/asyncapi.yaml), for tests.

    validate_message("status_changed", payload)   # AssertionError naming message and path
    validate_connect_auth({"token": "..."})
    validate_connect_error({"message": "...", "data": {"code": "invalid_token"}})

Schemas are JSON Schema draft-07 with local `$ref`s (`#/components/schemas/...`), which are
inlined so that each returned schema stands alone. `date-time` formats are always checked.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, FormatChecker

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI_PATH = ROOT / "openapi" / "asyncapi.yaml"

_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def is_date_time(value: object) -> bool:
    """RFC 3339 date-time (the fallback when jsonschema's checker is unavailable)."""
    if not isinstance(value, str):
        return True  # formats only constrain strings
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", value))
    except ValueError:
        return False
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    if "date-time" not in checker.checkers:  # jsonschema checks it only with rfc3339-validator
        checker.checks("date-time")(is_date_time)
    return checker


FORMAT_CHECKER = _format_checker()


def envelope(channel_id: str, sequence: int, body: dict[str, Any]) -> dict[str, Any]:
    """`{channel_id, sequence, event_id, event_type, ...}` as the AsyncAPI document says: an
    event body (`realtime.protocol.event_body`) stamped with its channel and sequence, the
    object the server's packets carry (`realtime.protocol.event_packet` builds them by
    concatenation; tests/unit/test_protocol.py checks the two agree)."""
    return {"channel_id": channel_id, "sequence": sequence, **body}


@functools.cache
def load_asyncapi() -> dict[str, Any]:
    """The parsed AsyncAPI document (cached: do not mutate it)."""
    document = yaml.safe_load(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{ASYNCAPI_PATH} is not a YAML mapping"
    return document


def resolve_pointer(ref: str, document: dict[str, Any] | None = None) -> Any:
    """The node a local `$ref` (`#/a/b`) points at."""
    assert ref.startswith("#/"), f"only local $refs are supported, got {ref!r}"
    node: Any = load_asyncapi() if document is None else document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"unresolvable $ref {ref!r}"
        node = node[token]
    return node


def _inline(node: Any, seen: tuple[str, ...] = ()) -> Any:
    """A copy of `node` with every local `$ref` replaced by its target (draft-07: a `$ref`'s
    sibling keywords are ignored)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref not in seen, f"recursive $ref {ref!r} cannot be inlined"
            return _inline(resolve_pointer(ref), (*seen, ref))
        return {key: _inline(value, seen) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, seen) for item in node]
    return node


def messages() -> dict[str, dict[str, Any]]:
    """Every message of the document, keyed by its `name` (the Socket.IO event name)."""
    found: dict[str, dict[str, Any]] = {}
    for key, message in load_asyncapi().get("components", {}).get("messages", {}).items():
        message = _inline(message)
        name = message.get("name")
        assert isinstance(name, str), f"components/messages/{key} has no name"
        assert name not in found, f"two messages are named {name!r}"
        found[name] = message
    return found


def message_schema(name: str) -> dict[str, Any]:
    """The payload schema (standalone) of the message whose `name` is `name`."""
    found = messages()
    assert name in found, f"the AsyncAPI document has no message named {name!r}"
    payload = found[name].get("payload")
    assert isinstance(payload, dict), f"message {name!r} has no payload schema"
    return payload


def component_schema(name: str) -> dict[str, Any]:
    """`components/schemas/<name>`, standalone."""
    schema = _inline(resolve_pointer(f"#/components/schemas/{name}"))
    assert isinstance(schema, dict)
    return schema


def _validate(label: str, schema: dict[str, Any], payload: object) -> None:
    validator = Draft7Validator(schema, format_checker=FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(payload), key=lambda error: list(error.path))
    if errors:
        problems = "\n".join(f"  at {error.json_path}: {error.message}" for error in errors)
        raise AssertionError(f"{label} does not match the AsyncAPI document:\n{problems}")


def validate_message(name: str, payload: object) -> None:
    """Assert that `payload` is a valid payload of message `name`."""
    _validate(f"message {name!r}", message_schema(name), payload)


def validate_connect_auth(payload: object) -> None:
    """Assert that `payload` is a valid CONNECT auth object (`ConnectAuth`)."""
    _validate("connect auth (ConnectAuth)", component_schema("ConnectAuth"), payload)


def validate_connect_error(payload: object) -> None:
    """Assert that `payload` is a valid `connect_error` payload (`ConnectError`)."""
    _validate("connect_error (ConnectError)", component_schema("ConnectError"), payload)
