"""What goes over a channel's namespace, encoded once per channel and event.

Socket.IO v5 packets are built with python-socketio's own encoder, so the bytes are exactly
what `sio.emit` would send; encoding them ourselves lets one packet be written to every socket
of a channel, and lets the ack id of an event be its sequence (see realtime.server).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any, Protocol

from socketio import packet

from claims_realtime.models.clock import rfc3339
from claims_realtime.models.event import ClaimEvent, NewEvent

NAMESPACE_PREFIX = "/channels/"
#: Matched against the whole namespace (`fullmatch`: `$` would also match before a final
#: newline, and `/channels/chan_x\n` would name chan_x).
_NAMESPACE = re.compile(r"/channels/(chan_[a-z0-9]{1,64})")

#: Server -> client messages besides the five event types.
RECOVERY = "recovery"
CHANNEL_CLOSED = "channel_closed"


def namespace_of(channel_id: str) -> str:
    return NAMESPACE_PREFIX + channel_id


def channel_id_of(namespace: str) -> str | None:
    """The channel id named by a namespace, or None if it is not a channel namespace."""
    match = _NAMESPACE.fullmatch(namespace)
    return match.group(1) if match else None


def event_body(event: ClaimEvent | NewEvent) -> dict[str, Any]:
    """The part of an envelope that is the same on every channel: built once per event."""
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "claim_id": event.claim_id,
        "organisation_id": event.organisation_id,
        "user_id": event.user_id,
        "actor_id": event.actor_id,
        "occurred_at": rfc3339(event.occurred_at),
        "data": event.data,
    }


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event body serialised once, to be stamped with each channel's id and sequence."""

    event_type: str
    #: The body's JSON without its opening brace: `"event_id":"…",…,"data":{…}}`.
    tail: str


def prepare(body: dict[str, Any]) -> PreparedEvent:
    # Same serialisation as python-socketio's packet encoder (compact, ASCII-escaped).
    return PreparedEvent(body["event_type"], json.dumps(body, separators=(",", ":"))[1:])


class EventFields(Protocol):
    """An event's body as stored or as just recorded: `data` already serialised."""

    event_id: str
    event_type: str
    claim_id: str
    organisation_id: str
    user_id: str
    actor_id: str | None
    occurred_at: datetime
    data_json: str


def prepare_fields(event: EventFields) -> PreparedEvent:
    """`prepare(event_body(event))` by concatenation, for an event just recorded or read
    back: its `data` is serialised already (the same compact ASCII JSON), and the rest are
    short strings. Byte for byte the same (tests/unit/test_protocol.py)."""
    actor = "null" if event.actor_id is None else _json_string(event.actor_id)
    tail = (
        f'"event_id":{_json_string(event.event_id)},'
        f'"event_type":{_json_string(event.event_type)},'
        f'"claim_id":{_json_string(event.claim_id)},'
        f'"organisation_id":{_json_string(event.organisation_id)},'
        f'"user_id":{_json_string(event.user_id)},'
        f'"actor_id":{actor},'
        f'"occurred_at":{_json_string(rfc3339(event.occurred_at))},'
        f'"data":{event.data_json}}}'
    )
    return PreparedEvent(event.event_type, tail)


def envelope_json(channel_id: str, sequence: int, event: PreparedEvent) -> str:
    """The envelope as JSON text: what a socket's packet carries and what REST answers.
    Channel ids (`chan_[a-z0-9]+`) never need JSON escaping."""
    return f'{{"channel_id":"{channel_id}","sequence":{sequence},{event.tail}'


def event_packet(channel_id: str, sequence: int, event: PreparedEvent) -> str:
    """`2/channels/<id>,<sequence>["<event_type>",{envelope}]`: the ack id is the sequence.

    Built by concatenation, byte for byte what `packet.Packet(...).encode()` produces for the
    same envelope (tests/unit/test_protocol.py checks it): event types (an enum) never need
    JSON escaping, so only the body is serialised, once.
    """
    return (
        f'2{NAMESPACE_PREFIX}{channel_id},{sequence}["{event.event_type}",'
        f"{envelope_json(channel_id, sequence, event)}]"
    )


def message_packet(channel_id: str, name: str, payload: dict[str, Any]) -> str:
    return _encode(channel_id, [name, payload])


def _encode(channel_id: str, data: list[Any], ack_id: int | None = None) -> str:
    pkt = packet.Packet(packet.EVENT, data=data, namespace=namespace_of(channel_id), id=ack_id)
    encoded = pkt.encode()
    assert isinstance(encoded, str)  # no binary attachments in JSON payloads
    return encoded


class Refusal(Exception):
    """A refused connection: `code` is machine-readable, `message` says why to a human."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
