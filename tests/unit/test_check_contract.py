"""tools.check_contract: passes on the real files, and names each kind of drift it must catch."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.check_contract import (
    DEFAULT_CONTRACT,
    DEFAULT_OPENAPI,
    ContractOperation,
    check,
    check_document,
    main,
    parse_contract,
    parse_header,
    served_paths,
)

PREFIX = "/api/v1/realtime-subscriptions"
LITERAL = PREFIX + PREFIX  # the contract's doubled prefix
OK_SUMMARY = "contract check: 6 operations x 2 base paths, 8 examples: OK"


@pytest.fixture
def contract_text() -> str:
    return DEFAULT_CONTRACT.read_text(encoding="utf-8")


@pytest.fixture
def openapi_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(DEFAULT_OPENAPI.read_text(encoding="utf-8"))
    return doc


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().out


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_real_files_pass(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys)
    assert status == 0, out
    assert out.splitlines() == [OK_SUMMARY]


def test_defaults_do_not_depend_on_the_working_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(capsys) == (0, OK_SUMMARY + "\n")


def test_parse_real_contract(contract_text: str) -> None:
    assert parse_header(contract_text) == (PREFIX, 6)
    ops = parse_contract(contract_text)
    assert [(op.method, op.path, op.operation_id) for op in ops] == [
        ("GET", LITERAL, None),
        ("GET", LITERAL + "/:channel_id", None),
        ("POST", LITERAL + "/organisation", "subscribeToOrganisationClaims"),
        ("POST", LITERAL + "/user", "subscribeToUserClaims"),
        ("PUT", LITERAL + "/:channel_id/reconnect", "reconnect"),
        ("DELETE", LITERAL + "/:channel_id", "unsubscribe"),
    ]
    assert ops[2].summary == "Subscribe to all claim events in an organisation"
    assert {op.access for op in ops} == {"Public"}
    assert all(isinstance(op.response_example, dict) for op in ops)
    assert [op.method for op in ops if op.request_example is not None] == ["POST", "POST"]
    assert ops[3].request_example == {
        "user_id": "usr_84cd12ef",
        "event_types": ["status_changed", "comment_added"],
    }
    assert ops[0].response_example["pagination"] == {"page": 1, "limit": 20, "total": 3}


def test_parse_is_not_fooled_by_example_text_or_metadata() -> None:
    text = (
        "REST /api/v1/things 1 endpoints\n"
        "POST /api/v1/things/api/v1/things\n\nMake a thing (makeThing)\n\nPublic\n\n"
        'Request Example\n\n{\n  "note": "GET /api/v1/things/api/v1/things",\n'
        '  "nested": {"Response Example": [1, 2]}\n}\n'
        'Response Example\n\n[\n  {"id": 1}\n]\n'
        'Additional Metadata\n\nDELETE /api/v1/things/api/v1/things\n\n{"x": 1}\n'
    )
    assert parse_contract(text) == [
        ContractOperation(
            method="POST",
            path="/api/v1/things/api/v1/things",
            summary="Make a thing",
            operation_id="makeThing",
            access="Public",
            request_example={
                "note": "GET /api/v1/things/api/v1/things",
                "nested": {"Response Example": [1, 2]},
            },
            response_example=[{"id": 1}],
        )
    ]


def test_served_paths_cover_both_mounts() -> None:
    assert served_paths(LITERAL + "/:channel_id/reconnect", PREFIX) == {
        "/api/v1": PREFIX + "/{channel_id}/reconnect",
        "/api/v1/realtime-subscriptions/api/v1": LITERAL + "/{channel_id}/reconnect",
    }


def test_extra_contract_operation_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, contract_text: str
) -> None:
    extra = f"PATCH {LITERAL}/:channel_id\n\nRename a channel (renameChannel)\n\nPublic\n\n"
    text = contract_text.replace("6 endpoints", "7 endpoints", 1)
    text = text.replace("Additional Metadata", extra + "Additional Metadata", 1)
    status, out = run(capsys, "--contract", write(tmp_path, "contract.txt", text))
    assert status == 1
    label = f"PROBLEM: PATCH {LITERAL}/:channel_id: not served as PATCH"
    assert f"{label} {PREFIX}/{{channel_id}} (base path /api/v1)" in out
    assert f"{label} {LITERAL}/{{channel_id}} (base path {PREFIX}/api/v1)" in out
    assert out.splitlines()[-1].endswith("7 operations x 2 base paths, 8 examples: 2 problems")


def test_response_example_violating_the_schema_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, contract_text: str
) -> None:
    before = '"status": "connected",\n  "event_count": 14'
    assert before in contract_text
    text = contract_text.replace(before, before.replace("connected", "sleeping"), 1)
    status, out = run(capsys, "--contract", write(tmp_path, "contract.txt", text))
    assert status == 1
    # Reported once: both mounts serve the same OpenAPI operation.
    line = f"PROBLEM: GET {LITERAL}/:channel_id: response example: 'sleeping' is not one of"
    assert out.count(line) == 1
    assert "at status" in out
    assert out.splitlines()[-1].endswith(": 1 problems")


def test_header_count_mismatch_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, contract_text: str
) -> None:
    text = contract_text.replace("6 endpoints", "5 endpoints", 1)
    status, out = run(capsys, "--contract", write(tmp_path, "contract.txt", text))
    assert status == 1
    assert "PROBLEM: contract header declares 5 endpoints, parsed 6" in out


def test_openapi_missing_an_operation_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, openapi_doc: dict[str, Any]
) -> None:
    del openapi_doc["paths"]["/realtime-subscriptions/{channel_id}"]["delete"]
    status, out = run(capsys, "--openapi", write(tmp_path, "api.yaml", yaml.safe_dump(openapi_doc)))
    assert status == 1
    label = f"PROBLEM: DELETE {LITERAL}/:channel_id: not served as DELETE"
    assert f"{label} {PREFIX}/{{channel_id}} (base path /api/v1)" in out
    assert f"{label} {LITERAL}/{{channel_id}} (base path {PREFIX}/api/v1)" in out


def test_summary_operation_id_security_and_request_example_drift(
    contract_text: str, openapi_doc: dict[str, Any]
) -> None:
    ops = parse_contract(contract_text)
    organisation = openapi_doc["paths"]["/realtime-subscriptions/organisation"]["post"]
    organisation.update(summary="Subscribe", operationId="subscribeOrg", security=[{"K": []}])
    bad_request = dict(ops[2].request_example, event_types=["nope"], extra=1)
    problems = check([ops[0], replace(ops[2], request_example=bad_request)], openapi_doc, PREFIX)
    label = f"POST {LITERAL}/organisation"
    assert problems == [
        f"{label}: summary 'Subscribe to all claim events in an organisation'"
        " != OpenAPI summary 'Subscribe'",
        f"{label}: operationId subscribeToOrganisationClaims != subscribeOrg",
        f"{label}: contract says Public but the operation requires security",
        f"{label}: request example: Additional properties are not allowed"
        " ('extra' was unexpected) at (root)",
        f"{label}: request example: 'nope' is not one of ['status_changed', 'claim_submitted',"
        " 'claim_approved', 'claim_rejected', 'comment_added'] at event_types/0",
    ]


def test_oas30_semantics_nullable_and_formats(
    contract_text: str, openapi_doc: dict[str, Any]
) -> None:
    # `nullable` only counts next to a `type` in the same schema object (OAS 3.0.3), so the
    # test declares it that way rather than relying on how the document spells it.
    summary = openapi_doc["components"]["schemas"]["SubscriptionSummary"]
    summary["properties"]["last_event_at"] = {
        "type": "string",
        "format": "date-time",
        "nullable": True,
    }
    listing = parse_contract(contract_text)[0]
    example = copy.deepcopy(listing.response_example)
    example["data"][0]["last_event_at"] = None
    assert check([replace(listing, response_example=example)], openapi_doc, PREFIX) == []
    example["data"][0]["created_at"] = "yesterday"
    assert check([replace(listing, response_example=example)], openapi_doc, PREFIX) == [
        f"GET {LITERAL}: response example: 'yesterday' is not a 'date-time' at data/0/created_at"
    ]


def test_invalid_openapi_document_is_reported(openapi_doc: dict[str, Any]) -> None:
    assert check_document(openapi_doc) == []
    broken = copy.deepcopy(openapi_doc)
    broken["paths"]["/realtime-subscriptions"]["get"]["operationId"] = "publishClaimEvent"
    assert check_document(broken) == [
        "OpenAPI document: Operation ID 'publishClaimEvent' for 'post' in '/claim-events'"
        " is not unique at $"
    ]
    dangling = copy.deepcopy(openapi_doc)
    dangling["components"]["schemas"]["SubscriptionList"]["properties"]["pagination"] = {
        "$ref": "#/components/schemas/Nope"
    }
    assert check_document(dangling) == [
        "OpenAPI document: unresolvable $ref '/components/schemas/Nope'"
    ]


def test_unparseable_example_is_a_problem_not_a_crash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, contract_text: str
) -> None:
    text = contract_text.replace('"missed_events": 2', '"missed_events": 2,,', 1)
    status, out = run(capsys, "--contract", write(tmp_path, "contract.txt", text))
    assert status == 1
    assert "PROBLEM: contract: line " in out and "Response Example: invalid JSON" in out
