"""A resuming Python subscriber for one channel (used by `claims-realtime tail`).

    async with ChannelClient(websocket_url, token) as client:
        async for message in client:
            if isinstance(message, Recovery): ...   # what the server could replay
            else: ...                               # an event envelope (dict), in order

It remembers the last sequence it received, reconnects after any drop presenting it as
`auth.last_sequence`, drops any event it already has (by sequence), and confirms each event
with the Socket.IO ack the server asks for.

`client.history()` pages through the same channel's kept events over REST
(`listChannelEvents`), without a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import socketio

from claims_realtime.realtime.protocol import CHANNEL_CLOSED, RECOVERY

logger = logging.getLogger(__name__)

#: Refusals after which reconnecting cannot help.
FATAL_CODES = frozenset(
    {
        "channel_not_found",
        "channel_closed",
        "invalid_token",
        "token_required",
        "last_sequence_ahead",
    }
)
#: Refusals after which reconnecting later can succeed: python-socketio's reconnection
#: loop keeps retrying with its randomised backoff. `rate_limited`: this address presented
#: too many bad tokens recently (the server's CONNECT_FAILURE_LIMIT per window);
#: `unavailable`: the server cannot reach its database right now.
TRANSIENT_CODES = frozenset({"rate_limited", "unavailable", "internal_error"})


@dataclass(frozen=True)
class Recovery:
    """The server's `recovery` message, sent first on every connection."""

    resumed_from: int
    head_sequence: int
    replayed: int
    recovered: bool
    first_available_sequence: int
    unavailable: int

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Recovery:
        return cls(**{name: payload[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class HistoryPage:
    """One answer of `listChannelEvents`."""

    #: Event envelopes, exactly as a socket receives them, in sequence order.
    events: list[dict[str, Any]]
    head_sequence: int
    first_available_sequence: int
    #: Events after the requested sequence that retention no longer holds.
    unavailable: int
    #: The next page's `after_sequence`; None once this page reached the head.
    next_after_sequence: int | None


class ChannelClosed(Exception):
    """The channel is gone (closed, unknown, or the token is wrong): no point reconnecting."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        #: `channel_closed`, or the server's refusal code (`invalid_token`, ...).
        self.code = code


class HistoryRefused(Exception):
    """`listChannelEvents` answered an error other than 404/410 (401, 400, 503, ...)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


async def read_history(
    api_url: str,
    channel_id: str,
    *,
    after_sequence: int = 0,
    limit: int = 1000,
    bearer: str | None = None,
) -> AsyncIterator[HistoryPage]:
    """Pages of `channel_id`'s kept events after `after_sequence`, up to the head as each page
    finds it; an unknown or closed channel raises ChannelClosed, any other error
    HistoryRefused."""
    url = f"{api_url.rstrip('/')}/api/v1/realtime-subscriptions/{channel_id}/events"
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with aiohttp.ClientSession(headers=headers) as http:
        while True:
            params = {"after_sequence": after_sequence, "limit": limit}
            async with http.get(url, params=params) as response:
                body = await response.json(content_type=None)
                status = response.status
            if status in (404, 410):
                code = "channel_not_found" if status == 404 else CHANNEL_CLOSED
                raise ChannelClosed(str(body.get("detail")), code)
            if status != 200:
                detail = body.get("detail") if isinstance(body, dict) else None
                raise HistoryRefused(status, str(detail or body))
            page = HistoryPage(
                events=body["data"],
                head_sequence=body["head_sequence"],
                first_available_sequence=body["first_available_sequence"],
                unavailable=body["unavailable"],
                next_after_sequence=body["next_after_sequence"],
            )
            yield page
            if page.next_after_sequence is None:
                return
            after_sequence = page.next_after_sequence


def split_websocket_url(websocket_url: str) -> tuple[str, str]:
    """`wss://host/channels/chan_x` -> (`https://host`, `/channels/chan_x`)."""
    parts = urlsplit(websocket_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if (
        scheme not in ("http", "https")
        or not parts.netloc
        or not parts.path.startswith("/channels/")
    ):
        raise ValueError(f"not a channel websocket_url: {websocket_url!r}")
    return f"{scheme}://{parts.netloc}", parts.path


class ChannelClient:
    """Subscribe to one channel; iterate over its events, resuming across drops."""

    def __init__(
        self,
        websocket_url: str,
        token: str,
        *,
        last_sequence: int | None = None,
        transports: list[str] | None = None,
        reconnection_delay: float = 0.5,
        connect_timeout: float = 0.0,
    ) -> None:
        self.url, self.namespace = split_websocket_url(websocket_url)
        self.token = token
        #: Highest sequence received; sent as auth.last_sequence on every (re)connect.
        self.last_sequence = last_sequence
        self.transports = transports
        #: How long connect() keeps retrying a first connection that fails for a reason that
        #: can pass (server not up yet, timeout, `rate_limited`, `unavailable`,
        #: `internal_error`); 0: once.
        self.connect_timeout = connect_timeout
        self._reconnection_delay = reconnection_delay
        self.recoveries: list[Recovery] = []
        self._messages: asyncio.Queue[dict[str, Any] | Recovery | BaseException] = asyncio.Queue()
        # One HTTP session for the client's lifetime, owned here rather than by python-engineio:
        # engineio closes its own session when a transport drops, and a reconnection attempt
        # starting meanwhile creates a new one that engineio then forgets, unclosed.
        self._http: aiohttp.ClientSession | None = None
        self._sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=5,
            # python-socketio adds this many seconds, +/-, to each delay: keep it under the delay.
            randomization_factor=reconnection_delay / 2,
        )
        self._sio.on("*", self._on_event, namespace=self.namespace)
        self._sio.on(RECOVERY, self._on_recovery, namespace=self.namespace)
        self._sio.on(CHANNEL_CLOSED, self._on_closed, namespace=self.namespace)
        self._sio.on("connect_error", self._on_connect_error, namespace=self.namespace)

    def _auth(self) -> dict[str, Any]:
        # A callable: python-socketio calls it again on every reconnection attempt.
        auth: dict[str, Any] = {"token": self.token}
        if self.last_sequence is not None:
            auth["last_sequence"] = self.last_sequence
        return auth

    async def connect(self) -> None:
        """Connect, retrying passing failures for up to `connect_timeout` seconds; a refusal
        that retrying cannot fix (unknown channel, wrong token, ...) raises ChannelClosed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = self._reconnection_delay
        while True:
            try:
                return await self._connect_once()
            except socketio.exceptions.ConnectionError as exc:
                # (A refusal with a FATAL_CODES code raises ChannelClosed, never retried.)
                if loop.time() + delay > deadline:
                    raise
                logger.warning("cannot connect yet (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _connect_once(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
            self._sio.eio.http = self._http
            self._sio.eio.external_http = True
        try:
            await self._sio.connect(
                self.url,
                namespaces=[self.namespace],
                auth=self._auth,
                transports=self.transports,
                wait_timeout=10,
            )
        except BaseException as exc:
            # Not connected, and a failed first connect is not retried: nothing needs the session.
            await self._http.close()
            self._http = None
            if not isinstance(exc, socketio.exceptions.ConnectionError):
                raise
            failure = self._messages.get_nowait() if not self._messages.empty() else exc
            raise (failure if isinstance(failure, BaseException) else exc) from None

    async def close(self) -> None:
        try:
            await self._stop()
        finally:
            if self._http is not None:
                await self._http.close()

    async def _stop(self) -> None:
        try:
            # shutdown() also stops a reconnection in progress. On the polling transport
            # python-engineio's clean disconnect waits for the pending long-poll to end (up to
            # the 25 s ping interval). The goodbye packets are sent first, so after a moment it
            # is safe to stop waiting.
            await asyncio.wait_for(self._sio.shutdown(), timeout=1)
        except TimeoutError:
            eio = self._sio.eio
            # Let the writer send the queued goodbye and stop first: a write after the
            # reset below would open a new HTTP session that nobody closes.
            if eio.write_loop_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(eio.write_loop_task, timeout=1)
            await eio.disconnect(abort=True)

    async def drop(self) -> None:
        """Cut the transport without saying goodbye, as a network failure would."""
        eio = self._sio.eio
        if eio.ws is not None:
            await eio.ws.close()
        elif eio.state == "connected":
            await eio.disconnect(abort=True, reason=eio.reason.TRANSPORT_ERROR)

    async def __aenter__(self) -> ChannelClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def history(
        self,
        after_sequence: int = 0,
        *,
        limit: int = 1000,
        bearer: str | None = None,
        api_url: str | None = None,
    ) -> AsyncIterator[HistoryPage]:
        """This channel's kept events after `after_sequence`, page by page over REST (no socket
        needed). `bearer`: the owner's JWT when the server runs AUTH_MODE=jwt; `api_url`: the
        API's origin when it differs from websocket_url's (PUBLIC_URL)."""
        channel_id = self.namespace.rsplit("/", 1)[1]
        return read_history(
            api_url or self.url,
            channel_id,
            after_sequence=after_sequence,
            limit=limit,
            bearer=bearer,
        )

    def __aiter__(self) -> AsyncIterator[dict[str, Any] | Recovery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any] | Recovery]:
        while True:
            message = await self._messages.get()
            if isinstance(message, BaseException):
                raise message
            yield message

    async def next(self, timeout: float | None = None) -> dict[str, Any] | Recovery:
        """The next message (event or Recovery); raises TimeoutError after `timeout` s."""
        message = await asyncio.wait_for(self._messages.get(), timeout)
        if isinstance(message, BaseException):
            raise message
        return message

    async def _on_event(self, event: str, envelope: Any = None) -> None:
        if not isinstance(envelope, dict) or not isinstance(envelope.get("sequence"), int):
            return
        sequence = envelope["sequence"]
        if self.last_sequence is not None and sequence <= self.last_sequence:
            return  # already have it (a replay overlapping what we got live)
        self.last_sequence = sequence
        self._messages.put_nowait(envelope)
        # Returning completes the Socket.IO ack the server asked for: sequence confirmed.

    async def _on_recovery(self, payload: dict[str, Any]) -> None:
        recovery = Recovery.from_payload(payload)
        self.recoveries.append(recovery)
        self._messages.put_nowait(recovery)

    async def _on_closed(self, payload: dict[str, Any]) -> None:
        closed_at = payload.get("closed_at")
        self._messages.put_nowait(ChannelClosed(f"channel closed at {closed_at}", CHANNEL_CLOSED))
        with contextlib.suppress(Exception):
            await self._sio.disconnect()

    async def _on_connect_error(self, data: Any = None) -> None:
        data = data if isinstance(data, dict) else {}
        code = (data.get("data") or {}).get("code") if isinstance(data.get("data"), dict) else None
        if code in FATAL_CODES:
            refusal = ChannelClosed(f"{code}: {data.get('message')}", str(code))
            self._messages.put_nowait(refusal)
            # Stop python-socketio's reconnection loop: retrying cannot succeed.
            asyncio.get_running_loop().create_task(self._sio.disconnect())
