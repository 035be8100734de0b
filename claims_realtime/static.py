"""Files the service reads or serves at run time, and the AsyncAPI document's route.

They are package data of `claims_realtime`: in the checkout `claims_realtime/openapi` links to
openapi/ and `claims_realtime/console_assets` to console/, and the wheel carries copies
(pyproject.toml, [tool.setuptools.package-data]). They are read with importlib.resources,
never by a path relative to the repository, so an installed wheel runs from any directory.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from starlette.responses import Response

from claims_realtime.handlers.problems import PROBLEM_JSON, method_not_allowed, problem_body

PACKAGE = "claims_realtime"
ALLOWED = ("GET", "HEAD")

ASYNCAPI_PATH = "/api/v1/asyncapi.yaml"
#: RFC 9512's media type for YAML.
ASYNCAPI_MEDIA_TYPE = "application/yaml"
ASYNCAPI_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-cache"}


def package_file(*parts: str) -> bytes:
    """The bytes of a data file of the package, e.g. package_file("openapi", "asyncapi.yaml")."""
    node = files(PACKAGE)
    for part in parts:
        node = node.joinpath(part)
    return node.read_bytes()


def file_response(method: str, body: bytes, media_type: str) -> Response:
    """200 with `body`; HEAD gets its headers (Content-Length included) and no body."""
    if method == "HEAD":
        return Response(b"", headers={"content-length": str(len(body))}, media_type=media_type)
    return Response(body, media_type=media_type)


def not_allowed(method: str) -> Response:
    body, allow = method_not_allowed(method, ALLOWED)
    return _problem_json(body, {"allow": allow})


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    return _problem_json(problem_body(status, title, detail), headers)


def _problem_json(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), body["status"], headers=headers, media_type=PROBLEM_JSON)


class AsyncApiRoute:
    """Serves `GET /api/v1/asyncapi.yaml` (the Socket.IO side's contract, beside the OpenAPI
    document); passes every other request on to `app`. Not an operation of the OpenAPI
    document: it describes the API rather than being part of it, like openapi.json."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.body = package_file("openapi", "asyncapi.yaml")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != ASYNCAPI_PATH:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method in ALLOWED:
            response = file_response(method, self.body, ASYNCAPI_MEDIA_TYPE)
        else:
            response = not_allowed(method)
        for name, value in ASYNCAPI_HEADERS.items():
            response.headers.setdefault(name, value)
        await response(scope, receive, send)
