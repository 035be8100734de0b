"""Logging: text or JSON lines, and a request id on every record logged while serving an
HTTP request.

    RequestId (ASGI)    accepts a sane incoming X-Request-ID or makes one, echoes it in the
                        response, and sets it for the request's log records

Every record gets a `request_id` attribute (None outside requests), so both formats and any
handler (pytest's caplog too) can show it. Secrets never reach a log through this service:
channel tokens and the publisher key are neither logged nor part of any logged URL.
"""

from __future__ import annotations

import contextvars
import importlib.util
import json
import logging
import os
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The request id of the HTTP request being served in this context.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
#: What an incoming X-Request-ID may look like, as a whole (`fullmatch`); anything else is
#: replaced (log injection).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_HEADER = "X-Request-ID"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
#: uvicorn configures these loggers with its own handlers before our app is built.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

_base_factory = logging.getLogRecordFactory()

_websockets_spec = importlib.util.find_spec("websockets")
#: Where the `websockets` library's code lives (its log lines are recognised by their file).
_WEBSOCKETS_DIR = (
    os.path.dirname(_websockets_spec.origin) + os.sep
    if _websockets_spec is not None and _websockets_spec.origin
    else None
)


class NoWebsocketsDebug(logging.Filter):
    """Drops the `websockets` library's DEBUG lines. uvicorn lends it `uvicorn.error`, and at
    DEBUG it logs every frame and handshake header, abridged to head and tail: the tail of a
    Socket.IO CONNECT is its channel token. realtime.transport turns them off at the source;
    this keeps them out under uvicorn's own protocol too (FAST_PATHS=off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            record.levelno > logging.DEBUG
            or _WEBSOCKETS_DIR is None
            or not record.pathname.startswith(_WEBSOCKETS_DIR)
        )


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id_var.get()
    return record


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Root logging at `level` in `log_format`; uvicorn's own handlers get the same format."""
    logging.setLogRecordFactory(_record_factory)
    formatter = formatter_for(log_format)
    # As before: sets the level and a handler only when nothing configured logging yet
    # (under pytest, its capture handlers and levels stay as the tests set them).
    logging.basicConfig(level=level)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(item, NoWebsocketsDebug) for item in uvicorn_error.filters):
        uvicorn_error.addFilter(NoWebsocketsDebug())
    for handler in logging.getLogger().handlers:
        if type(handler) in (logging.StreamHandler, logging.FileHandler):
            handler.setFormatter(formatter)
    if log_format == "json":
        for name in UVICORN_LOGGERS:
            for handler in logging.getLogger(name).handlers:
                handler.setFormatter(formatter)


def new_request_id() -> str:
    return secrets.token_hex(8)


class RequestId:
    """ASGI middleware: one id per HTTP request, in the response header and the logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else new_request_id()
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
