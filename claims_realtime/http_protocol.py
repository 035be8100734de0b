"""uvicorn's httptools HTTP protocol with a bound on each request's head: 431 beyond.

uvicorn with httptools sets no limit on a request's head, and httptools joins a field's
pieces (`bytes +=`) until the field ends: a 64 MB header costs megabytes and quadratic
copying before any code of ours sees it. A head over MAX_HEADER_BYTES (request line and
fields as sent) or with more than MAX_HEADER_COUNT fields, websocket upgrades included, gets
`431 Request Header Fields Too Large` (problem+json) and a closed connection. Chunked
trailer fields count as header fields of their request.

Two measures, because httptools hands a field over only once it is complete:
- the bytes read while httptools may be holding an unfinished head (or trailer section)
  (`data_received`): a read that would cross the bound is parsed only up to it first, so a
  small head followed by a large body in the same read passes;
- the fields as the parser hands them over (`on_url`, `on_header`), for a head that starts
  in the middle of a read (pipelined requests), which the first measure does not count.

Served with `uvicorn --http claims_realtime.http_protocol:HttpProtocol` (as `claims-realtime
serve` does). uvicorn is pinned in pyproject.toml; tests/unit/test_http_protocol.py checks
what this relies on. Should uvicorn's class lack a method overridden here, `HttpProtocol`
is uvicorn's own class (unbounded) and a warning says so.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any, Final, Literal, cast

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from claims_realtime.settings import Settings

WRITTEN_FOR_UVICORN: Final = "0.54.0"
#: uvicorn's methods overridden here (each calls uvicorn's own).
RELIED_ON: Final = (
    *("data_received", "send_400_response", "on_message_begin", "on_url", "on_header"),
    *("on_headers_complete", "on_body", "on_message_complete"),
)
#: State of uvicorn's protocol read here (set by its __init__ and connection_made).
RELIED_ON_STATE: Final = ("transport", "parser", "cycle", "headers", "server_state", "logger")

STATUS_LINE_431: Final = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
logger = logging.getLogger("uvicorn.error")

Bound = Literal["size", "count"]


@functools.cache
def limits() -> tuple[int, int]:
    """(max_header_bytes, max_header_count) of this process, read once: uvicorn imports this
    module anew in each `--workers` process, and they all inherit the environment."""
    settings = Settings.from_env()
    return settings.max_header_bytes, settings.max_header_count


class _Refused(Exception):
    """Raised in a parser callback: httptools stops and uvicorn's data_received, catching
    it as an HttpParserError, calls send_400_response, which answers 431 instead."""


class HeadBoundedProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes, self.max_header_count = limits()
        #: Whether httptools may hold an unfinished head or trailer section, and the bytes
        #: read since it may (counted only from reads that started in that state).
        self._holding = True
        self._held_bytes = 0
        #: The current request's line and fields as the callbacks saw them (a lower bound
        #: of their bytes on the wire: no method, version or whitespace around values).
        self._head_size = 0
        self._refused: Bound | None = None

    def data_received(self, data: bytes) -> None:
        if not self._holding:
            super().data_received(data)
            return
        room = self.max_head_bytes - self._held_bytes
        if len(data) <= room:
            self._held_bytes += len(data)
            super().data_received(data)
            return
        # The head may end within this read, then a body follows: parse up to the bound,
        # and refuse only if the head is still unfinished there.
        self._held_bytes = self.max_head_bytes
        view = memoryview(data)
        if room > 0:
            super().data_received(cast(bytes, view[:room]))  # httptools takes memoryviews
            if self.transport.is_closing() or self.parser is None:
                return
        if self._holding and self._held_bytes >= self.max_head_bytes:
            self._refuse("size")
        elif not self.parser.should_upgrade():  # as uvicorn: nothing after an upgrade's head
            self.data_received(cast(bytes, view[room:]))

    def send_400_response(self, msg: str) -> None:
        if self._refused is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refused)

    def _stop(self, bound: Bound) -> None:
        self._refused = bound
        raise _Refused(bound)

    def _refuse(self, bound: Bound) -> None:
        self._refused = bound
        if bound == "size":
            limit = f"the size limit of {self.max_head_bytes} bytes"
            detail = f"The request line and header fields exceed {limit}."
        else:
            limit = f"the count limit of {self.max_header_count}"
            detail = f"The request has more header fields than {limit}."
        self.logger.warning("Refused a request with 431: %s", detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A response is under way (pipelined requests, or trailers): no 431 fits in it.
            self.transport.close()
            return
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request Header Fields Too Large",
                "status": 431,
                "detail": detail,
            }
        ).encode()
        content = [STATUS_LINE_431]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()

    # Parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.max_head_bytes:
            self._stop("size")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_size > self.max_head_bytes:
            self._stop("size")
        if len(self.headers) >= self.max_header_count:
            self._stop("count")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._holding = False
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._holding = False
        super().on_body(body)

    def on_chunk_header(self) -> None:
        # A chunk's data, or after the last chunk the trailer fields, which httptools holds
        # like header fields (called by httptools; uvicorn does not define it).
        self._holding = True
        self._held_bytes = 0

    def on_chunk_complete(self) -> None:
        self._holding = False

    def on_message_complete(self) -> None:
        self._holding = True
        self._held_bytes = 0
        super().on_message_complete()


def _select() -> type[asyncio.Protocol]:
    missing = [name for name in RELIED_ON if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        logger.warning(
            "uvicorn %s's HttpToolsProtocol lacks %s: serving without the bounds on request "
            "headers (MAX_HEADER_BYTES, MAX_HEADER_COUNT), written for uvicorn %s",
            uvicorn.__version__,
            ", ".join(missing),
            WRITTEN_FOR_UVICORN,
        )
        return HttpToolsProtocol
    if uvicorn.__version__ != WRITTEN_FOR_UVICORN:
        logger.warning(
            "claims_realtime.http_protocol was written for uvicorn %s, running %s: "
            "check tests/unit/test_http_protocol.py",
            WRITTEN_FOR_UVICORN,
            uvicorn.__version__,
        )
    return HeadBoundedProtocol


#: What `claims-realtime serve` gives uvicorn as its HTTP protocol.
HttpProtocol: Final = _select()
