"""ASGI guards in front of Connexion: requests they refuse never reach the document's app.

`MethodGuard` answers methods the document does not declare, and path parameters Starlette
cannot route; `BodyLimit` answers bodies over MAX_REQUEST_BYTES before they are read whole.
"""

from __future__ import annotations

import json
import re
import typing as t

from starlette.datastructures import Headers

from claims_realtime.handlers.problems import PROBLEM_JSON, method_not_allowed
from claims_realtime.validation import shorten


class MethodGuard:
    """Answers 405 (with an exact `Allow`) for a method the document does not declare, and
    400 for a path parameter Starlette cannot route.

    Connexion 3.3 registers one Starlette route per operation, so `GET /x/organisation` is
    served by `GET /x/{channel_id}` (a 400 about channel_id) although the document only
    declares POST on that path, and a 405's `Allow` lists the methods of whichever route
    matched first. Here a request is matched against the document's paths, literal segments
    first (as OpenAPI requires), and undeclared methods never reach Connexion.

    A path parameter holding a line feed (`/x/chan_1%0A`) never reaches parameter validation:
    Starlette's mount matches the rest of the path with `.*`, which stops at a line feed (and
    `$` then matches before it), so the request gets a bare 404. It gets the 400 naming the
    parameter that any other malformed value gets.
    """

    def __init__(self, app: t.Any, spec: dict[str, t.Any], base_paths: t.Iterable[str]) -> None:
        self.app = app
        verbs = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
        routes = []
        for base in base_paths:
            for template, item in spec["paths"].items():
                methods = sorted(m.upper() for m in item if m in verbs)
                segments = (base.rstrip("/") + template).strip("/").split("/")
                parameters = [s[1:-1] for s in segments if s.startswith("{")]
                literal = len(segments) - len(parameters)
                pattern = "/".join(
                    "([^/]+)" if s.startswith("{") else re.escape(s) for s in segments
                )
                routes.append((literal, re.compile(f"/{pattern}/?"), methods, parameters))
        # Most literal segments first: `/x/organisation` beats `/x/{channel_id}`.
        self.routes = sorted(routes, key=lambda route: -route[0])

    async def __call__(self, scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        if scope["type"] == "http":
            for _, pattern, methods, parameters in self.routes:
                match = pattern.fullmatch(scope["path"])
                if match:
                    if scope["method"] not in methods:
                        await self._method_not_allowed(scope["method"], methods, send)
                        return
                    for name, value in zip(parameters, match.groups(), strict=True):
                        if "\n" in value:
                            await self._unroutable(name, value, send)
                            return
                    break
        await self.app(scope, receive, send)

    @staticmethod
    async def _method_not_allowed(method: str, allowed: list[str], send: t.Any) -> None:
        problem_, allow = method_not_allowed(method, allowed)
        await _send_problem(send, problem_, [(b"allow", allow.encode())])

    @staticmethod
    async def _unroutable(name: str, value: str, send: t.Any) -> None:
        problem_ = {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": shorten(f"path parameter '{name}': {value!r} contains a line break."),
            "field": name,
        }
        await _send_problem(send, problem_)


async def _send_problem(
    send: t.Any, problem_: dict[str, t.Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send `problem_` as a whole `application/problem+json` response (ASGI)."""
    body = json.dumps(problem_).encode()
    start_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        *(headers or []),
        (b"content-length", str(len(body)).encode()),
    ]
    await send(
        {"type": "http.response.start", "status": problem_["status"], "headers": start_headers}
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answers 413 for a request body larger than `max_bytes`, before reading it all.

    A declared Content-Length over the cap is refused without reading a byte; otherwise
    (chunked bodies, or a client sending more than it declared) the body is counted while
    it streams in and refused as soon as it passes the cap. A body within the cap is handed
    on whole: Connexion reads bodies whole anyway, so memory stays bounded by the cap.
    Engine.IO long-polling never gets here (Socket.IO is the outer app, with its own cap).
    """

    def __init__(self, app: t.Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send, f"Content-Length {declared} is over the limit")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, "The request body is over the limit")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, t.Any]:
            nonlocal replayed
            if replayed:
                return t.cast("dict[str, t.Any]", await receive())
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: t.Any, why: str) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"{why}: request bodies may be at most {self.max_bytes} bytes.",
                "field": "body",
            }
        ).encode()
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            # The rest of the body is not read: the connection cannot be reused.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
