"""Request validation through Connexion's `validator_map`: validators that name the bad
field, and a compiled check in front of jsonschema for bodies.

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
import math
import typing as t

import fastjsonschema
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import (
    BadRequestProblem,
    ExtraParameterProblem,
    UnsupportedMediaTypeProblem,
)
from connexion.json_schema import resolve_refs
from connexion.lifecycle import ConnexionRequest
from connexion.validators import VALIDATOR_MAP, JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.datastructures import Headers
from starlette.types import Scope

from claims_realtime.handlers.app_state import VALIDATED_BODY
from claims_realtime.patterns import ParameterSchemaValidator, RequestBodySchemaValidator


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


def shorten(text: str, limit: int = 240) -> str:
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


def check_body(schema: dict[str, t.Any], body: t.Any) -> None:
    """Validate a parsed JSON body against its (resolved) request `schema` as every request
    is: FieldProblem, naming the field, if it is invalid."""
    if accepted_fast(schema, body):
        return
    validator = RequestBodySchemaValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    try:
        validator.validate(body)
    except ValidationError as exc:
        field = _error_field(exc)
        raise FieldProblem(field, shorten(f"{field}: {exc.message}")) from None


def request_body_schema(document: dict[str, t.Any], path: str, method: str) -> dict[str, t.Any]:
    """An operation's JSON request body schema, its `$ref`s resolved as Connexion resolves
    the document it serves."""
    resolved = resolve_refs(document)
    schema: dict[str, t.Any] = resolved["paths"][path][method]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


def body_problem(schema: dict[str, t.Any], body: t.Any) -> str | None:
    """None if `body` is valid against `schema`, else the detail a 400 would carry (it names
    the field): for bodies that come another way than HTTP (the outbox)."""
    try:
        check_body(schema, body)
    except FieldProblem as problem:
        return str(problem.detail)
    return None


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
        # Kept for handlers that read it instead of taking `body` (app_state.validated_body).
        scope.setdefault("extensions", {})[VALIDATED_BODY] = body
        return body

    def _validate(self, body: t.Any) -> dict[str, t.Any] | None:
        if not self._nullable and body is None:
            raise FieldProblem("body", "The request body must not be empty.")
        check_body(self._schema, body)
        return None  # what jsonschema's validate() returns for a valid body


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
                    raise FieldProblem(name, shorten(detail))


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
