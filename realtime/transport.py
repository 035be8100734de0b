"""uvicorn's websocket protocol with two shortcuts for the hottest frames: channel acks in,
events out.

Every delivered event costs one frame out and, from a confirming client, one ack frame in.
Through ASGI each of them is a message dict, an asyncio.Queue hop and a task switch (the
Engine.IO socket's writer task going out, its reader task coming in): py-spy at 5,000
deliveries/s put that bookkeeping above the cost of the frames themselves. This protocol
keeps ASGI for everything else and offers the Engine.IO transport (realtime.engine) a direct
line while a connection is plain sailing:

- `frame_hook`: a text frame the hook takes (a channel ack) is handled as it is parsed,
  when nothing is queued before it for the application, so frames stay in order;
- `send_now(text)`: writes a text frame at once when the connection is open and its
  transport is not asking us to stop (flow control), else says no and the caller queues.

Served with `uvicorn --ws realtime.transport:ChannelWebSocketProtocol` (as
`claims-realtime serve` does). Under any other protocol the shortcuts are simply absent.
It subclasses uvicorn's sans-I/O websockets protocol (uvicorn and websockets are pinned in
pyproject.toml; tests/unit/test_transport.py checks the attributes relied on).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

#: Called with the frame's text; True when it consumed the frame.
TextHook = Callable[[str], bool]


class ChannelWebSocketProtocol(WebSocketsSansIOProtocol):
    #: Set by the Engine.IO transport while it serves this connection.
    frame_hook: TextHook | None = None

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
                if hook(text):
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
            # its Frame object and checks: 0.4 against 3.1 us per event in a microbenchmark.
            self.transport.write(_text_frame_header(len(payload)) + payload)
        return True


_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def _text_frame_header(length: int) -> bytes:
    """RFC 6455 header of a final, unmasked text frame of `length` bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return _HEADER_16(0x81, 126, length)
    return _HEADER_64(0x81, 127, length)
