"""openapi/asyncapi.yaml: a valid AsyncAPI 3.0.0 document that matches what the server sends."""

from __future__ import annotations

import copy
import functools
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft7Validator
from socketio import packet

from claims_realtime.models.channel import ALL_EVENT_TYPES
from claims_realtime.models.event import ClaimEvent
from claims_realtime.realtime.protocol import (
    channel_id_of,
    event_body,
    event_packet,
    namespace_of,
    prepare,
)
from tests.asyncapi import (
    FORMAT_CHECKER,
    component_schema,
    envelope,
    is_date_time,
    load_asyncapi,
    message_schema,
    messages,
    resolve_pointer,
    validate_connect_auth,
    validate_connect_error,
    validate_message,
)
from tests.helpers import ROOT, assert_problem

ASYNCAPI_SCHEMA = ROOT / "node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"
OPENAPI = ROOT / "openapi" / "claims-realtime.yaml"

SERVER_MESSAGES = ("recovery", *ALL_EVENT_TYPES, "channel_closed", "connect_error")
CLIENT_MESSAGES = ("ack", "connect")


@functools.cache
def asyncapi_validator() -> Draft7Validator:
    if not ASYNCAPI_SCHEMA.is_file():
        pytest.fail(
            f"{ASYNCAPI_SCHEMA} is missing: run `make test` (or `npm ci`) to install the Node "
            "dev dependencies (@asyncapi/specs); this test never skips."
        )
    schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    # Its $refs are all internal (#/definitions/...): they resolve against the schema itself.
    return Draft7Validator(schema, format_checker=FORMAT_CHECKER)


def asyncapi_errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{error.json_path}: {error.message[:300]}"
        for error in asyncapi_validator().iter_errors(document)
    ]


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in refs(item)]
    return []


def follow(ref: str) -> Any:
    """The node `ref` points at, following `$ref` chains."""
    node = resolve_pointer(ref)
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        node = resolve_pointer(node["$ref"])
    return node


def claim_event(event_type: str, **overrides: Any) -> ClaimEvent:
    """An in-memory ClaimEvent (never saved: no database needed)."""
    fields: dict[str, Any] = {
        "event_id": "evt_contract_0001",
        "event_type": event_type,
        "claim_id": "clm_7781",
        "organisation_id": "org_001",
        "user_id": "usr_84cd12ef",
        "actor_id": None,
        "occurred_at": datetime(2026, 3, 26, 8, 14, 22, 123456, tzinfo=UTC),
        "recorded_at": datetime(2026, 3, 26, 8, 14, 23, tzinfo=UTC),
        "data": {},
        "fingerprint": "x",
        "channel_count": 1,
    }
    fields.update(overrides)
    return ClaimEvent(**fields)


def good_envelope(event_type: str = "status_changed") -> dict[str, Any]:
    event = claim_event(event_type, data={"to": "in_review"})
    return envelope("chan_b5c6d7e8", 3, event_body(event))


# -- the document itself ----------------------------------------------------------------------


def test_document_is_valid_asyncapi_3_0_0() -> None:
    errors = asyncapi_errors(load_asyncapi())
    assert not errors, "openapi/asyncapi.yaml is not valid AsyncAPI 3.0.0:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("operations", "receiveAck", "action"), "publish"),  # AsyncAPI 2 verb
        (("channels", "channel", "messages", "ack"), {"payload": {"type": 5}}),
        (("info",), {"title": "no version"}),
    ],
)
def test_schema_validation_rejects_a_broken_document(where: tuple[str, ...], value: Any) -> None:
    broken = copy.deepcopy(load_asyncapi())
    node = broken
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    assert asyncapi_errors(broken), f"a document with {'/'.join(where)} = {value!r} passed"


def test_every_local_ref_resolves() -> None:
    document = load_asyncapi()
    found = refs(document)
    assert found
    for ref in found:
        resolve_pointer(ref, document)


def test_info_and_server() -> None:
    document = load_asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "Claims Realtime events"
    assert document["info"]["version"] == "0.1.0"
    description = document["info"]["description"]
    for phrase in ("no gap", "no duplicate", "in sequence order", "recovered"):
        assert phrase in description
    server = document["servers"]["production"]
    assert (server["host"], server["protocol"], server["pathname"]) == (
        "realtime.example.com",
        "wss",
        "/socket.io/",
    )
    assert "Socket.IO v5" in server["description"]


def test_one_channel_per_namespace_with_its_parameter() -> None:
    channels = load_asyncapi()["channels"]
    assert list(channels) == ["channel"]
    channel = channels["channel"]
    assert channel["address"] == "/channels/{channel_id}"
    assert set(re.findall(r"{(\w+)}", channel["address"])) == set(channel["parameters"])
    for example in channel["parameters"]["channel_id"]["examples"]:
        assert channel_id_of(namespace_of(example)) == example
    # The channel's messages are exactly the components' messages.
    assert {follow(ref["$ref"])["name"] for ref in channel["messages"].values()} == set(messages())
    for key, ref in channel["messages"].items():
        assert follow(ref["$ref"])["name"] == key


def test_every_socketio_message_is_documented() -> None:
    documented = messages()
    for name in (*ALL_EVENT_TYPES, "recovery", "channel_closed", "ack"):
        assert name in documented, f"no message named {name!r}"
    for name, message in documented.items():
        assert message.get("examples"), f"message {name!r} has no examples"
        Draft7Validator.check_schema(message_schema(name))


@pytest.mark.parametrize("event_type", ALL_EVENT_TYPES)
def test_event_messages_pin_their_type_on_the_shared_envelope(event_type: str) -> None:
    message = load_asyncapi()["components"]["messages"][event_type]
    assert message["name"] == event_type
    schema = resolve_pointer(message["payload"]["$ref"])
    assert {"$ref": "#/components/schemas/EventEnvelope"} in schema["allOf"]
    assert {"properties": {"event_type": {"const": event_type}}} in schema["allOf"]


def test_operations_follow_asyncapi_3_semantics() -> None:
    """Operations are the server's: it `send`s what clients listen to, `receive`s acks."""
    document = load_asyncapi()
    channel_messages = {
        f"#/channels/channel/messages/{key}" for key in document["channels"]["channel"]["messages"]
    }
    action_of: dict[str, str] = {}
    for operation_id, operation in document["operations"].items():
        assert operation["channel"] == {"$ref": "#/channels/channel"}, operation_id
        for ref in operation["messages"]:
            # AsyncAPI 3: an operation's messages are a subset of its channel's messages.
            assert ref["$ref"] in channel_messages, f"{operation_id}: {ref['$ref']}"
            action_of[follow(ref["$ref"])["name"]] = operation["action"]
    assert action_of == {
        **{name: "send" for name in SERVER_MESSAGES},
        **{name: "receive" for name in CLIENT_MESSAGES},
    }


def test_shared_definitions_agree_with_the_rest_api_and_the_code() -> None:
    openapi = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"]
    assert component_schema("ChannelId")["pattern"] == openapi["ChannelId"]["pattern"]
    assert component_schema("ExternalId")["pattern"] == openapi["ExternalId"]["pattern"]
    assert component_schema("EventType")["enum"] == list(ALL_EVENT_TYPES)
    assert openapi["EventType"]["enum"] == list(ALL_EVENT_TYPES)
    # Every refusal code the server can send, and no other.
    source = "".join(
        (ROOT / "realtime" / name).read_text(encoding="utf-8")
        for name in ("namespace.py", "hub.py")
    )
    codes = set(re.findall(r'Refusal\(\s*"(\w+)"', source))
    codes |= set(re.findall(r'\{"code": "(\w+)"\}', source))
    assert codes == set(component_schema("ConnectErrorCode")["enum"])


# -- examples and wrong payloads ---------------------------------------------------------------


def test_every_example_validates_against_its_own_message() -> None:
    checked = 0
    for name, message in messages().items():
        for example in message["examples"]:
            validate_message(name, example["payload"])
            checked += 1
    assert checked >= len(messages())


def test_examples_of_events_use_their_own_type() -> None:
    for event_type in ALL_EVENT_TYPES:
        for example in messages()[event_type]["examples"]:
            assert example["payload"]["event_type"] == event_type


def test_connect_examples_validate_against_the_component_schemas() -> None:
    for example in messages()["connect"]["examples"]:
        validate_connect_auth(example["payload"])
    for example in messages()["connect_error"]["examples"]:
        validate_connect_error(example["payload"])


def _without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


ENVELOPE = good_envelope()
RECOVERY = {
    "channel_id": "chan_b5c6d7e8",
    "resumed_from": 3,
    "head_sequence": 20,
    "replayed": 13,
    "recovered": False,
    "first_available_sequence": 8,
    "unavailable": 4,
}

WRONG_PAYLOADS: list[tuple[str, str, object]] = [
    ("sequence 0", "status_changed", {**ENVELOPE, "sequence": 0}),
    ("sequence as string", "status_changed", {**ENVELOPE, "sequence": "3"}),
    ("wrong event_type", "status_changed", {**ENVELOPE, "event_type": "comment_added"}),
    ("unknown event_type", "status_changed", {**ENVELOPE, "event_type": "claim_paid"}),
    ("missing occurred_at", "status_changed", _without(ENVELOPE, "occurred_at")),
    ("missing actor_id", "claim_submitted", _without(good_envelope("claim_submitted"), "actor_id")),
    ("impossible date", "status_changed", {**ENVELOPE, "occurred_at": "2026-02-30T08:00:00.000Z"}),
    ("not a date-time", "status_changed", {**ENVELOPE, "occurred_at": "yesterday"}),
    ("offset, not Z", "status_changed", {**ENVELOPE, "occurred_at": "2026-03-26T10:00:00+02:00"}),
    ("actor_id number", "status_changed", {**ENVELOPE, "actor_id": 7}),
    ("data not object", "status_changed", {**ENVELOPE, "data": [1, 2]}),
    ("bad channel_id", "status_changed", {**ENVELOPE, "channel_id": "chan_ABC"}),
    ("extra property", "status_changed", {**ENVELOPE, "seq": 3}),
    ("not an object", "status_changed", [ENVELOPE]),
    ("recovered but lost", "recovery", {**RECOVERY, "recovered": True}),
    ("lost nothing yet not recovered", "recovery", {**RECOVERY, "unavailable": 0}),
    ("first_available 0", "recovery", {**RECOVERY, "first_available_sequence": 0}),
    ("negative resumed_from", "recovery", {**RECOVERY, "resumed_from": -1}),
    ("recovered as string", "recovery", {**RECOVERY, "recovered": "false"}),
    ("missing head_sequence", "recovery", _without(RECOVERY, "head_sequence")),
    ("missing closed_at", "channel_closed", {"channel_id": "chan_b5c6d7e8"}),
    ("bad closed_at", "channel_closed", {"channel_id": "chan_b5c6d7e8", "closed_at": "now"}),
    ("negative ack", "ack", {"sequence": -1}),
    ("boolean ack", "ack", {"sequence": True}),
    ("string ack", "ack", {"sequence": "5"}),
    ("empty ack", "ack", {}),
    ("bare number ack", "ack", 5),
    ("empty token", "connect", {"token": ""}),
    ("no token", "connect", {"last_sequence": 3}),
    ("negative last_sequence", "connect", {"token": "t", "last_sequence": -1}),
    ("unknown code", "connect_error", {"message": "no", "data": {"code": "nope"}}),
    ("no data", "connect_error", {"message": "no"}),
]


@pytest.mark.parametrize(
    ("name", "payload"),
    [pytest.param(name, payload, id=label) for label, name, payload in WRONG_PAYLOADS],
)
def test_a_wrong_payload_is_rejected(name: str, payload: object) -> None:
    with pytest.raises(AssertionError, match=f"message '{name}'"):
        validate_message(name, payload)


def test_a_rejection_names_the_failing_path() -> None:
    with pytest.raises(AssertionError) as failure:
        validate_message("status_changed", {**ENVELOPE, "occurred_at": "2026-13-01T00:00:00Z"})
    assert "message 'status_changed'" in str(failure.value)
    assert "$.occurred_at" in str(failure.value)


def test_connect_helpers_reject_wrong_payloads() -> None:
    with pytest.raises(AssertionError, match="ConnectAuth"):
        validate_connect_auth({"token": "t", "last_sequence": "3"})
    with pytest.raises(AssertionError, match="ConnectError"):
        validate_connect_error({"message": "x", "data": {}})
    validate_connect_auth({"token": "t", "last_sequence": 0})
    validate_connect_error({"message": "x", "data": {"code": "internal_error"}})


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-03-26T08:14:22.123Z", True),
        ("2026-03-26T08:14:22Z", True),
        ("2026-03-26t08:14:22+02:00", True),
        ("2026-02-30T08:14:22Z", False),
        ("2026-03-26T25:00:00Z", False),
        ("2026-03-26", False),
        ("2026-03-26T08:14:22", False),
        ("not a date", False),
    ],
)
def test_date_time_format_is_checked(value: str, valid: bool) -> None:
    assert FORMAT_CHECKER.conforms(value, "date-time") is valid
    assert is_date_time(value) is valid  # the fallback agrees with jsonschema's checker


# -- what the real encoder produces -------------------------------------------------------------


@pytest.mark.parametrize("event_type", ALL_EVENT_TYPES)
def test_encoded_envelopes_validate(event_type: str) -> None:
    variants = [
        claim_event(event_type),
        claim_event(
            event_type,
            event_id="evt_3k2j4h5g6f7d8s9a0q1w2e3r",
            actor_id="usr_coord99",
            occurred_at=datetime(2026, 3, 26, 10, 0, tzinfo=timezone(timedelta(hours=2))),
            data={"comment": "Ünïcode ✓", "nested": {"list": [1, None, True]}, "amount": 1.5},
        ),
    ]
    for sequence, event in enumerate(variants, start=1):
        payload = envelope("chan_b5c6d7e8", sequence, event_body(event))
        validate_message(event_type, payload)
        assert payload["event_type"] == event_type
    second = envelope("chan_x", 2, event_body(variants[1]))
    assert second["occurred_at"] == "2026-03-26T08:00:00.000Z"


@pytest.mark.parametrize("event_type", ALL_EVENT_TYPES)
def test_encoded_packets_carry_the_documented_name_payload_and_ack_id(event_type: str) -> None:
    body = event_body(claim_event(event_type, actor_id="usr_coord99"))
    encoded = event_packet("chan_b5c6d7e8", 42, prepare(body))
    decoded = packet.Packet(encoded_packet=encoded)
    assert decoded.packet_type == packet.EVENT
    assert decoded.namespace == "/channels/chan_b5c6d7e8"
    name, payload = decoded.data
    assert name == event_type
    validate_message(name, payload)
    assert decoded.id == payload["sequence"] == 42


def test_an_envelope_under_another_event_name_is_rejected() -> None:
    payload = envelope("chan_b5c6d7e8", 1, event_body(claim_event("claim_approved")))
    validate_message("claim_approved", payload)
    with pytest.raises(AssertionError, match="event_type"):
        validate_message("claim_rejected", payload)


async def test_the_document_is_served_beside_the_openapi_document(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/api/v1/asyncapi.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/yaml"
    assert response.content == (ROOT / "openapi" / "asyncapi.yaml").read_bytes()
    assert yaml.safe_load(response.text)["asyncapi"] == "3.0.0"
    head = await api.head("/api/v1/asyncapi.yaml")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(response.content))
    refused = await api.post("/api/v1/asyncapi.yaml")
    assert_problem(refused, 405)
    assert refused.headers["allow"] == "GET, HEAD"
    # The console links to it.
    page = (await api.get("/console/")).text
    assert 'href="../api/v1/asyncapi.yaml"' in page
