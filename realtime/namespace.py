"""The channel namespaces `/channels/<channel_id>`: who may connect, from where they resume,
and what clients may send (`ack`)."""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol, TypeGuard

import socketio
from socketio.exceptions import ConnectionRefusedError

from claims_realtime.models.db import database_unavailable
from claims_realtime.realtime.limits import FailureLimiter, client_address
from claims_realtime.realtime.protocol import Refusal, channel_id_of

log = logging.getLogger(__name__)

#: Refusals that count against the client's address (see realtime.limits.FailureLimiter):
#: presenting a token, or guessing a channel, that is not right.
CREDENTIAL_FAILURES = frozenset({"token_required", "channel_not_found", "invalid_token"})
#: Refusals only a broken or hostile client earns: logged, once per connection.
MALFORMED = frozenset({"not_a_channel", "invalid_last_sequence"})


class Channels(Protocol):
    """What the namespace needs of the delivery service (realtime.hub.Hub, wired by
    claims_realtime.app). What it needs of the Socket.IO server (the sid's Engine.IO
    connection, the misbehaviour record) it reads from `self.server`, as python-socketio sets
    it when the namespace is registered."""

    @property
    def connect_failures(self) -> FailureLimiter:
        """Connect attempts with bad credentials, per client address."""
        ...

    async def attach(
        self,
        channel_id: str,
        namespace: str,
        sid: str,
        eio_sid: str,
        token: str,
        last_sequence: int | None,
    ) -> None:
        """Accept a socket on a channel and start its replay, or raise Refusal."""
        ...

    async def detach(self, channel_id: str, sid: str) -> None: ...

    def confirm(self, sid: str, channel_id: str, sequence: int) -> None: ...

    async def credential_failure(self, address: str) -> None:
        """`address` presented bad credentials (counted in every process)."""
        ...


class ChannelNamespace(socketio.AsyncNamespace):
    """Handles every namespace (registered as `*`); only channel namespaces are accepted.

    Connect with `auth: {token, last_sequence?}`. A refusal reaches the client as
    `connect_error` with `{message, data: {code}}`.
    """

    def __init__(self, channels: Channels) -> None:
        super().__init__("*")
        self.channels = channels

    async def on_connect(
        self, namespace: str, sid: str, environ: dict[str, Any], auth: Any = None
    ) -> None:
        channel_id = channel_id_of(namespace)
        address = client_address(environ)
        limiter = self.channels.connect_failures
        try:
            # First, and at constant cost: an address that keeps presenting bad credentials
            # gets no further look at any token until its failures age out.
            if limiter.blocked(address):
                raise Refusal(
                    "rate_limited",
                    "Too many connection attempts with bad credentials from this address; "
                    f"retry in {math.ceil(limiter.retry_after(address))} s.",
                )
            if channel_id is None:
                raise Refusal(
                    "not_a_channel",
                    f"{namespace} is not a channel namespace (/channels/<channel_id>)",
                )
            token, last_sequence = _parse_auth(auth)
            eio_sid = self.server.manager.eio_sid_from_sid(sid, namespace)
            await self.channels.attach(channel_id, namespace, sid, eio_sid, token, last_sequence)
        except Refusal as refusal:
            await self._refused(namespace, sid, address, refusal)
            raise ConnectionRefusedError(refusal.message, {"code": refusal.code}) from None
        except Exception as exc:
            # python-socketio retries a handler that raised TypeError with another
            # signature; never let an internal error escape into that machinery.
            if database_unavailable(exc) is not None:
                log.warning("connect to %s refused: database unavailable (%r)", namespace, exc)
                raise ConnectionRefusedError(
                    "The database is unavailable; retry later.", {"code": "unavailable"}
                ) from None
            log.exception("connect to %s failed", namespace)
            raise ConnectionRefusedError("internal error", {"code": "internal_error"}) from None

    async def _refused(self, namespace: str, sid: str, address: str, refusal: Refusal) -> None:
        if refusal.code in CREDENTIAL_FAILURES:
            limiter = self.channels.connect_failures
            await self.channels.credential_failure(address)
            if limiter.blocked(address):
                log.warning(
                    "refusing connections from %s for up to %.0f s: %d bad credentials",
                    address,
                    limiter.window,
                    limiter.limit,
                )
        elif refusal.code in MALFORMED:
            eio_sid = self.server.manager.eio_sid_from_sid(sid, namespace)
            self.server.misbehaviour.note(
                eio_sid or sid, "connect to %.80s refused: %s", namespace, refusal.code
            )

    async def on_disconnect(self, namespace: str, sid: str, reason: Any = None) -> None:
        channel_id = channel_id_of(namespace)
        if channel_id is not None:
            await self.channels.detach(channel_id, sid)

    async def on_ack(self, namespace: str, sid: str, data: Any = None, *extra: Any) -> None:
        """`ack {sequence}`: the client confirms everything up to `sequence`."""
        channel_id = channel_id_of(namespace)
        sequence = data.get("sequence") if isinstance(data, dict) else None
        if channel_id is None or extra or not _is_sequence(sequence):
            eio_sid = self.server.manager.eio_sid_from_sid(sid, namespace)
            self.server.misbehaviour.note(
                eio_sid or sid, "sent a malformed ack %.80r on %.80s", data, namespace
            )
            return
        self.channels.confirm(sid, channel_id, sequence)


def _is_sequence(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_auth(auth: Any) -> tuple[str, int | None]:
    if not isinstance(auth, dict) or not isinstance(auth.get("token"), str) or not auth["token"]:
        raise Refusal("token_required", "auth.token is required: connect with auth {token}")
    last_sequence = auth.get("last_sequence")
    if last_sequence is not None and not _is_sequence(last_sequence):
        raise Refusal("invalid_last_sequence", "auth.last_sequence must be a non-negative integer")
    return auth["token"], last_sequence
