"""uvicorn's websocket protocol with two shortcuts for the hottest frames: channel acks in,
events out.

Every delivered event costs one frame out and, from a confirming client, one ack frame in.
Through ASGI each of them is a message dict, an asyncio.Queue hop and a task switch (the
Engine.IO socket's writer task going out, its reader task coming in): py-spy at 5,000
deliveries/s put that bookkeeping above the cost of the frames themselves. This protocol
keeps ASGI for everything else and offers the Engine.IO transport (realtime.engine) a direct
line while a connection is plain sailing:

- `frame_hook`: a text frame the hook takes (a channel ack) is handled as it is parsed,
  when nothing is queued before it for the application, so frames stay in order; the
  commonest read, one or more whole ack frames, is parsed here before websockets sees it
  (see `data_received`);
- `send_now(text)`: writes a text frame at once when the connection is open and its
  transport is not asking us to stop (flow control), else says no and the caller queues.

Served with `uvicorn --ws claims_realtime.realtime.transport:ChannelWebSocketProtocol` (as
`claims-realtime serve` does when FAST_PATHS is on and `FAST_PATH_UVICORN` and
`FAST_PATH_WEBSOCKETS` match what is installed; else it serves uvicorn's own
`websockets-sansio`). Under any other protocol the shortcuts are simply absent.
tests/unit/test_transport.py checks the behaviour relied on.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol, State
from websockets.streams import StreamReader

from claims_realtime.realtime.fastpaths import FastPath

try:  # websockets' C unmasking, as websockets itself uses when it was built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

#: Called with the frame's text; True when it consumed the frame.
TextHook = Callable[[str], bool]

_NAME = "the uvicorn websocket protocol (realtime.transport)"
#: uvicorn's protocol state and methods read or overridden here.
FAST_PATH_UVICORN = FastPath(
    _NAME,
    "uvicorn",
    "0.54",
    relies_on=tuple(
        (WebSocketsSansIOProtocol, name)
        for name in (
            *("data_received", "send_receive_event_to_app", "conn", "frames", "queue"),
            *("close_sent", "handshake_complete", "disconnected", "writable"),
            *("initial_response", "transport", "curr_msg_data_type"),
        )
    ),
)
#: websockets' parser and connection state read here (and the frames it would build).
FAST_PATH_WEBSOCKETS = FastPath(
    _NAME,
    "websockets",
    "17.4",
    relies_on=(
        *((StreamReader, name) for name in ("at_eof", "buffer")),
        *(
            (Protocol, name)
            for name in (
                *("parse", "parser", "reader", "state", "extensions", "current_size"),
                *("max_message_size", "expect_continuation_frame", "writes", "send_text"),
                *("data_to_send", "debug"),
            )
        ),
    ),
)


class ChannelWebSocketProtocol(WebSocketsSansIOProtocol):
    #: Set by the Engine.IO transport while it serves this connection.
    frame_hook: TextHook | None = None
    #: Longest text (in characters) the hook is offered; the transport sets its own limit,
    #: and a longer frame goes to the application, which refuses it.
    frame_limit: int = sys.maxsize
    #: True while websockets' parser is known to wait at a frame boundary with nothing
    #: buffered: found so once, and no byte has reached it since.
    _parser_idle = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # At DEBUG websockets logs every frame, abridged to its head and tail: a Socket.IO
        # CONNECT's tail is its channel token, and events carry claim data. Never logged.
        self.conn.debug = False

    def data_received(self, data: bytes) -> None:
        """Whole, short, final, masked text frames at the front of `data` go straight to
        the hook while it takes them; the rest (any other frame, a frame cut by the read, a
        frame the hook declines) goes through websockets and uvicorn from that boundary on.

        A confirming client sends one small ack frame per event: websockets' generator-based
        parser and uvicorn's event dispatch cost more than the ack's own handling (py-spy:
        ~10% of the event loop's samples at 5,000 deliveries/s). Only taken when websockets
        itself waits at a frame boundary with nothing buffered, so that it would have parsed
        these very frames, and they change nothing of its state (a final text frame when no
        fragmented message is open, no extension negotiated)."""
        hook = self.frame_hook
        if hook is not None and len(data) >= 6 and data[0] == 0x81 and self._between_frames():
            taken = _take_frames(data, hook, self.frame_limit)
            if taken == len(data):
                return
            data = data[taken:]
        self._parser_idle = False
        super().data_received(data)

    def _between_frames(self) -> bool:
        conn = self.conn
        if (
            conn.state is not State.OPEN
            or self.close_sent
            or not self.queue.empty()  # an earlier frame still waits for the application
        ):
            return False
        if self._parser_idle:
            # Only a read moves the parser and fills its buffers: the checks below would
            # answer as they did (they cost as much as the ack itself, every ack).
            return True
        if (
            conn.extensions
            or conn.current_size is not None
            or (conn.max_message_size is not None and conn.max_message_size < 126)
            or conn.reader.buffer
            or self.frames
        ):
            return False
        # The parser (ServerProtocol.parse, after the handshake in Protocol.parse) suspended
        # where Protocol.parse waits for the next frame's first byte.
        outer = getattr(conn.parser, "gi_yieldfrom", None)
        inner = getattr(outer, "gi_yieldfrom", None)
        self._parser_idle = (
            getattr(outer, "gi_code", None) is _PARSE_CODE
            and getattr(inner, "gi_code", None) is _AT_EOF_CODE
        )
        return self._parser_idle

    def send_receive_event_to_app(self) -> None:
        hook = self.frame_hook
        if (
            hook is not None
            and self.curr_msg_data_type == "text"
            and len(self.frames) == 1
            and not self.close_sent
            and self.queue.empty()  # nothing received earlier still waits for the app
        ):
            try:
                text = str(self.frames[0], "utf-8")
            except UnicodeDecodeError:
                pass  # uvicorn's own path logs it
            else:
                if len(text) <= self.frame_limit and hook(text):
                    self.frames = []
                    return
        super().send_receive_event_to_app()

    def send_now(self, text: str) -> bool:
        """Write one text frame now; False when the caller must queue it instead (not open
        yet, closing, or the peer is not reading fast enough)."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.initial_response is not None
            or self.transport.is_closing()
        ):
            return False
        payload = text.encode()
        conn = self.conn
        if (
            conn.state is not State.OPEN
            or conn.extensions
            or conn.expect_continuation_frame
            or conn.writes
        ):
            # websockets' own framing (compression, fragments), or its refusal (closing)
            conn.send_text(payload)
            self.transport.write(b"".join(conn.data_to_send()))
        else:
            # The frame websockets would build (a server's frames are not masked), without
            # its Frame object and checks (docs/performance-log.md#the-delivery-path).
            self.transport.write(_text_frame_header(len(payload)) + payload)
        return True


_PARSE_CODE = Protocol.parse.__code__
_AT_EOF_CODE = StreamReader.at_eof.__code__


def _take_frames(data: bytes, hook: TextHook, limit: int) -> int:
    """Hand the whole frames at the front of `data` that are final, masked, unextended text
    frames of under 126 bytes (one header byte 0x81, one length byte, a four-byte mask) and
    at most `limit` bytes to `hook`, in order, until one is not such a frame, is cut short,
    is not UTF-8 or is declined; answer the bytes taken (always a frame boundary). A frame
    over `limit` bytes but not characters is left to `send_receive_event_to_app`."""
    offset, size = 0, len(data)
    while size - offset >= 6 and data[offset] == 0x81:
        length = data[offset + 1] - 0x80  # negative when unmasked: websockets' error
        end = offset + 6 + length
        if not 0 <= length < 126 or end > size or length > limit:
            break
        try:
            text = str(apply_mask(data[offset + 6 : end], data[offset + 2 : offset + 6]), "utf-8")
        except UnicodeDecodeError:
            break  # websockets and uvicorn decide what an invalid text frame does
        if not hook(text):
            break
        offset = end
    return offset


_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def _text_frame_header(length: int) -> bytes:
    """RFC 6455 header of a final, unmasked text frame of `length` bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return _HEADER_16(0x81, 126, length)
    return _HEADER_64(0x81, 127, length)
