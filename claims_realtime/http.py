"""HTTP plumbing around Connexion: operationId resolution, validators that name the bad
field, and the single mapping from errors to `application/problem+json`.

Connexion 3.3 needs three fixes here (see docs/architecture.md, "Facts about the stack the
code relies on"):
* a JSON body that is not UTF-8 raised UnicodeDecodeError (a 500): we answer 400;
* parameter errors carried jsonschema's multi-line dump and no parameter name: we name it;
* a custom validator map must be a MediaTypeDict copied from the default, or body
  validation is silently skipped.

Both validators read the document's patterns as ECMA-262 does (claims_realtime.patterns).

Valid bodies are checked by a compiled validator (fastjsonschema, ~25x faster than
jsonschema on an ingestion batch: jsonschema was a fifth of the server's CPU on the
one-channel-per-event workload); anything it refuses is checked again by Connexion's
jsonschema validator, which decides and words the error.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import typing as t

import fastjsonschema
from connexion import problem
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import (
    BadRequestProblem,
    ExtraParameterProblem,
    ProblemException,
    UnsupportedMediaTypeProblem,
)
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.resolver import Resolver
from connexion.validators import VALIDATOR_MAP, JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.datastructures import Headers
from starlette.types import Scope

from claims_realtime.models.db import database_unavailable
from claims_realtime.models.errors import DomainError
from claims_realtime.patterns import ParameterSchemaValidator, RequestBodySchemaValidator
from claims_realtime.static import method_not_allowed

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Where BodyValidator leaves the JSON body it parsed (in the ASGI scope's extensions): a
#: handler that takes only the body gets that object (claims_realtime.dispatch) rather than
#: a second parse of the same bytes. Only a body that passed validation reaches a handler.
VALIDATED_BODY = "claims_realtime.validated_body"


class SnakeCaseResolver(Resolver):
    """`operationId: listSubscriptions` + `x-openapi-router-controller:
    claims_realtime.handlers.subscriptions` resolves to
    `claims_realtime.handlers.subscriptions.list_subscriptions`.

    The document keeps the contract's camelCase operationIds (what integrators and generated
    clients see); the Python functions keep Python names. An unresolvable operation fails
    at start-up.
    """

    def resolve_operation_id(self, operation: t.Any) -> str:
        controller = operation.router_controller
        function = re.sub(r"(?<!^)(?=[A-Z])", "_", operation.operation_id).lower()
        return f"{controller}.{function}" if controller else function


class FieldProblem(BadRequestProblem):
    """A 400 problem with the RFC 9457 extension member `field` naming the bad input."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail=detail)
        self.ext = {"field": field}


def _error_field(error: ValidationError, root: str = "") -> str:
    """Dotted path of the instance a jsonschema error is about (`events.3.event_type`)."""
    path = [str(part) for part in error.absolute_path]
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        path += missing[:1]
    elif error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {}))
        path += sorted(str(name) for name in instance if name not in known)[:1]
    parts = ([root] if root else []) + path
    return ".".join(parts) or "body"


def _reject_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def loads_strict_json(text: str) -> t.Any:
    """Standard JSON only: Python's `json` also accepts NaN and Infinity (and turns 1e400
    into infinity), which we would then send to JavaScript clients that cannot parse them."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _short(text: str, limit: int = 240) -> str:
    """jsonschema repeats the offending value in its messages; a 500-event batch would be
    echoed back whole."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_format(name: str) -> t.Callable[[str], bool]:
    return lambda value: Draft4Validator.FORMAT_CHECKER.conforms(value, name)


#: jsonschema's own format checks (date-time by rfc3339-validator), so that the compiled
#: validator accepts no string that Connexion's would refuse.
_FORMATS = {name: _check_format(name) for name in Draft4Validator.FORMAT_CHECKER.checkers}
#: id(schema) -> (schema, its compiled validator). The schema is kept alive with its entry,
#: so its id cannot be reused for another schema while cached.
_compiled: dict[int, tuple[dict[str, t.Any], t.Callable[[t.Any], t.Any]]] = {}
_COMPILED_MAX = 256


def accepted_fast(schema: dict[str, t.Any], body: t.Any) -> bool:
    """True if `body` is certainly valid against the (request) `schema`.

    False means "ask jsonschema": the compiled check is at least as strict as Connexion's
    Draft 4 request validator (nullable and readOnly it treats more strictly; formats are the
    same functions; both read a pattern's `$` as `\\Z`), never more lenient.
    """
    entry = _compiled.get(id(schema))
    if entry is None or entry[0] is not schema:
        if len(_compiled) >= _COMPILED_MAX:
            _compiled.clear()
        draft4 = {**copy.deepcopy(schema), "$schema": "http://json-schema.org/draft-04/schema#"}
        entry = _compiled[id(schema)] = (schema, fastjsonschema.compile(draft4, formats=_FORMATS))
    try:
        entry[1](body)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


class BodyValidator(JSONRequestBodyValidator):
    """JSON body validation that answers 4xx, naming the field, for every malformed body."""

    async def wrap_receive(self, receive: t.Any, *, scope: Scope) -> t.Any:
        headers = Headers(scope=scope)
        if "content-type" not in headers:
            # Connexion validates a body without Content-Type as JSON, then hands the handler
            # raw bytes (a 500). Say what is missing instead.
            problem_ = UnsupportedMediaTypeProblem(
                detail="Content-Type is missing; send the body as application/json."
            )
            problem_.ext = {"field": "Content-Type"}
            raise problem_
        if not int(headers.get("content-length", 0) or 0) and self._required:
            raise FieldProblem("body", "The request body must not be empty.")
        return await super().wrap_receive(receive, scope=scope)

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: Scope) -> t.Any:
        raw = b"".join([chunk async for chunk in stream])
        try:
            text = raw.decode(self._encoding)
        except (UnicodeDecodeError, LookupError):
            raise FieldProblem("body", f"The request body is not valid {self._encoding}.") from None
        if not text:
            return None
        try:
            body = loads_strict_json(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise FieldProblem("body", f"The request body is not valid JSON: {detail}.") from None
        scope.setdefault("extensions", {})[VALIDATED_BODY] = body
        return body

    def _validate(self, body: t.Any) -> dict[str, t.Any] | None:
        if not self._nullable and body is None:
            raise FieldProblem("body", "The request body must not be empty.")
        if accepted_fast(self._schema, body):
            return None  # what jsonschema's validate() returns for a valid body
        validator = RequestBodySchemaValidator(
            self._schema, format_checker=Draft4Validator.FORMAT_CHECKER
        )
        try:
            return t.cast("dict[str, t.Any] | None", validator.validate(body))
        except ValidationError as exc:
            field = _error_field(exc)
            raise FieldProblem(field, _short(f"{field}: {exc.message}")) from None


class ParametersValidator(ParameterValidator):
    """Parameter validation whose errors name the parameter, in one line."""

    def validate_request(self, request: ConnexionRequest) -> None:
        if self.strict_validation:
            extra = self.validate_query_parameter_list(
                request, security_params=self.security_query_params
            )
            if extra:
                names = ", ".join(sorted(extra))
                problem_ = ExtraParameterProblem(param_type="query", extra_params=sorted(extra))
                problem_.ext = {"field": sorted(extra)[0]}
                problem_.detail = f"Unknown query parameter(s): {names}."
                raise problem_
        sources: dict[str, t.Callable[[dict[str, t.Any]], str | None]] = {
            "query": lambda p: request.query_params.get(p["name"]),
            "path": lambda p: request.path_params.get(p["name"].replace("-", "_")),
            "header": lambda p: request.headers.get(p["name"]),
            "cookie": lambda p: request.cookies.get(p["name"]),
        }
        for location, read in sources.items():
            for param in self.parameters.get(location, []):
                value = read(param)
                name = param["name"]
                if value is None:
                    if param.get("required"):
                        raise FieldProblem(name, f"Missing {location} parameter '{name}'.")
                    continue
                schema = param.get("schema", param)
                validator = ParameterSchemaValidator(
                    schema, format_checker=Draft4Validator.FORMAT_CHECKER
                )
                error = next(iter(validator.iter_errors(_coerce(schema, value))), None)
                if error is not None:
                    detail = f"{location} parameter '{name}': {error.message}"
                    raise FieldProblem(name, _short(detail))


def _coerce(schema: dict[str, t.Any], value: str) -> t.Any:
    """Query and path values arrive as text; check integers as integers."""
    if schema.get("type") == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    return value


def validator_map() -> dict[str, t.Any]:
    body = MediaTypeDict(VALIDATOR_MAP["body"])
    body["*/*json"] = BodyValidator
    return {**VALIDATOR_MAP, "body": body, "parameter": ParametersValidator}


def _problem_response(
    status: int,
    title: str,
    detail: str,
    ext: dict[str, t.Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ConnexionResponse:
    response: ConnexionResponse = problem(status, title, detail, headers=headers, ext=ext)
    response.content_type = PROBLEM_JSON
    return response


async def domain_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, DomainError)
    return _problem_response(
        exc.status, exc.title, exc.detail, exc.extensions() or None, exc.headers() or None
    )


async def http_problem(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, ProblemException)
    return _problem_response(
        exc.status, exc.title or "Error", exc.detail or exc.title or "", exc.ext, exc.headers
    )


async def unexpected_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    unavailable = database_unavailable(exc)
    if unavailable is not None:  # a 503 the client may retry, not a failure of ours
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        return await domain_error(request, unavailable)
    # Never leak a stack trace or internals to the client; the log has the details.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _problem_response(
        500, "Internal Server Error", "The server failed to handle the request."
    )


ERROR_HANDLERS: list[tuple[type[Exception], t.Callable[..., t.Any]]] = [
    (DomainError, domain_error),
    (ProblemException, http_problem),
    (Exception, unexpected_error),
]


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
            "detail": _short(f"path parameter '{name}': {value!r} contains a line break."),
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
