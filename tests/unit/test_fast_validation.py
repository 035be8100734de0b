"""The compiled body validator never accepts what the jsonschema validator that decides
(Connexion's, reading patterns as ECMA-262) refuses, and does accept ordinary valid bodies
(else the fast path would be dead code)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from connexion.spec import Specification
from jsonschema import Draft4Validator

from claims_realtime.app import SPEC_FILE
from claims_realtime.patterns import RequestBodySchemaValidator
from claims_realtime.validation import accepted_fast
from tests.helpers import ROOT

SPEC = Specification.load(ROOT / "openapi" / SPEC_FILE)


def body_schema(path: str) -> dict[str, Any]:
    """The request body schema of POST `path`, references resolved, as Connexion gets it."""
    operation = SPEC.spec["paths"][path]["post"]
    return dict(operation["requestBody"]["content"]["application/json"]["schema"])


def jsonschema_accepts(schema: dict[str, Any], body: Any) -> bool:
    validator = RequestBodySchemaValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    return bool(validator.is_valid(body))


EVENT = {
    "event_id": "evt_1",
    "event_type": "status_changed",
    "claim_id": "clm_1",
    "organisation_id": "org_1",
    "user_id": "usr_1",
    "actor_id": "usr_2",
    "occurred_at": "2026-12-01T10:00:00Z",
    "data": {"status": "approved", "amount": 120.5},
}


def variants(valid: dict[str, Any]) -> list[Any]:
    """`valid`, and near misses of each of its fields: wrong types, bad formats and
    patterns, booleans for numbers, extra fields, missing fields."""
    bodies: list[Any] = [valid, None, [], "x", 1, True, {}]
    replacements: list[Any] = [
        None,
        True,
        1,
        1.0,
        "",
        "x" * 300,
        "bad value",
        "abc\n",
        [],
        {},
        "2026-13-01T10:00:00Z",
        "2026-12-01T25:00:00Z",
        "2026-12-01T10:00:00+0100",
        "2026-12-01 10:00:00Z",
        "2026-12-01T10:00:00",
        ["claim_submitted", "claim_submitted"],
        ["claim_submitted", True],
        ["nope"],
    ]
    for name in valid:
        missing = dict(valid)
        del missing[name]
        bodies.append(missing)
        for value in replacements:
            bodies.append({**valid, name: value})
    bodies.append({**valid, "unexpected": 1})
    return bodies


CASES = [
    ("/realtime-subscriptions/organisation", {"organisation_id": "org_1", "user_id": "usr_1"}),
    (
        "/realtime-subscriptions/user",
        {"user_id": "usr_1", "event_types": ["claim_submitted", "claim_approved"]},
    ),
    ("/claim-events", EVENT),
]


@pytest.mark.parametrize(("path", "valid"), CASES, ids=[case[0] for case in CASES])
def test_never_more_lenient_than_jsonschema(path: str, valid: dict[str, Any]) -> None:
    schema = body_schema(path)
    assert accepted_fast(schema, valid) and jsonschema_accepts(schema, valid)
    refused = 0
    for body in variants(valid):
        if accepted_fast(schema, copy.deepcopy(body)):
            assert jsonschema_accepts(schema, body), body
        else:
            refused += 1
    assert refused > 10  # the near misses were really tried


def test_a_batch_of_events() -> None:
    schema = body_schema("/claim-events/batch")
    batch = {"events": [dict(EVENT, event_id=f"evt_{i}") for i in range(500)]}
    assert accepted_fast(schema, batch)
    for event in variants(EVENT):
        body = {"events": [EVENT, event]}
        if accepted_fast(schema, body):
            assert jsonschema_accepts(schema, body), event
    too_many = {"events": [EVENT] * 501}
    assert not accepted_fast(schema, too_many) and not jsonschema_accepts(schema, too_many)
