"""Routing a request to its handler: the per-operation work Connexion 3.3 redoes on every
request, done once. What a request gets is unchanged; this is where its time went.

* `AsyncOperation` built its decorator chain anew for each request (parameter and response
  decorators, the URI parser), inspecting the handler's signature with `inspect.signature`;
  each security handler inspected its check function twice more. `ServiceApp`'s operations
  build theirs on their first request (the URI parser needs the operation, which Connexion
  only provides while routing one) and keep it; `SignatureOnce` is the security handlers'
  part.
* Request validation built its parameter and body validators (and two URI parsers) per
  request: `_RequestValidation` keeps them per operation.
* The Swagger UI middleware matched every request against its routes: a path that cannot
  be one of them goes straight on (`_Docs`).
* An operation whose only input is a required JSON body, with a handler taking just `body`
  (subscribing, publishing), skips Connexion's parameter decorator, which parsed the body a
  second time and worked out that there was nothing else to pass. It gets the object the
  request validator parsed and validated (`claims_realtime.http.VALIDATED_BODY`). Every
  other operation goes through Connexion's decorators as before.

It cut the CPU a request spends between the outermost middleware and the handler to about a
quarter (docs/performance-log.md#requests-through-connexion).

All of it rests on Connexion 3.3's internals (`FAST_PATH`): `app_class` gives Connexion's
own `AsyncApp` instead when FAST_PATHS is off or another Connexion is installed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import typing as t

import connexion
from connexion.apps.asynchronous import AsyncApi, AsyncASGIApp, AsyncOperation
from connexion.context import operation, receive, scope
from connexion.decorators import StarletteDecorator
from connexion.decorators.parameter import unwrap_decorators
from connexion.decorators.response import AsyncResponseDecorator
from connexion.frameworks.starlette import Starlette as StarletteFramework
from connexion.lifecycle import ConnexionRequest
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.operations import AbstractOperation
from connexion.security import AbstractSecurityHandler
from connexion.uri_parsing import AbstractURIParser
from connexion.utils import inspect_function_arguments, is_nullable
from starlette.types import Receive, Scope, Send

from claims_realtime.fastpaths import FastPath
from claims_realtime.http import VALIDATED_BODY

log = logging.getLogger(__name__)

Handler = t.Callable[[ConnexionRequest], t.Awaitable[t.Any]]

#: The Connexion internals this module sets, overrides or reads.
FAST_PATH = FastPath(
    "the Connexion dispatch shortcuts (claims_realtime.dispatch)",
    "connexion",
    "3.3",
    relies_on=(
        (connexion.AsyncApp, "_middleware_app"),
        (AsyncASGIApp, "api_cls"),
        *((AsyncOperation, name) for name in ("from_operation", "_fn", "pythonic_params")),
        (AsyncOperation, "jsonifier"),
        *((RequestValidationOperation, name) for name in ("_operation", "_validator_map")),
        *((RequestValidationOperation, name) for name in ("strict_validation", "next_app")),
        (RequestValidationOperation, "security_query_params"),
        *((RequestValidationOperation, name) for name in ("extract_content_type", "__call__")),
        (RequestValidationOperation, "validate_mime_type"),
        *((RequestValidationAPI, name) for name in ("make_operation", "validator_map")),
        (RequestValidationMiddleware, "api_cls"),
        (SwaggerUIMiddleware, "app"),
        (ConnexionMiddleware, "default_middlewares"),
        (AbstractSecurityHandler, "_accepts_kwarg"),
        *((AbstractOperation, name) for name in ("_uri_parser_class", "uri_parser_class")),
        *((AbstractOperation, name) for name in ("parameters", "request_body", "consumes")),
        *((AbstractOperation, name) for name in ("body_schema", "body_definition", "body_name")),
        (AbstractOperation, "method"),
    ),
)


class _Operation(AsyncOperation):
    """An `AsyncOperation` whose decorated handler and URI parser are built once."""

    _handler: Handler | None = None
    _uri_parser: AbstractURIParser | None = None

    async def __call__(self, scope_: Scope, receive_: Receive, send: Send) -> t.Any:
        if self._handler is None:
            decorator = StarletteDecorator(
                pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
            )
            self._uri_parser = decorator.uri_parser
            if takes_only_a_json_body(self._fn, operation):
                self._handler = self._with_body(self._fn)
            else:
                self._handler = decorator.decorate(self._fn)
        # As Connexion's ASGIDecorator does: the request from the context's scope and receive.
        request = StarletteFramework.get_request(
            uri_parser=self._uri_parser, scope=scope, receive=receive
        )
        response = await self._handler(request)
        return await response(scope_, receive_, send)

    def _with_body(self, function: t.Callable[..., t.Awaitable[t.Any]]) -> Handler:
        """`function(body=...)`, its answer made a response by Connexion's response decorator."""

        async def call(request: ConnexionRequest) -> t.Any:
            body = scope.get("extensions", {}).get(VALIDATED_BODY, _UNPARSED)
            if body is _UNPARSED:  # not validated here (no schema): parse it as Connexion would
                body = await request.json()
            return await function(body=body)

        decorate = AsyncResponseDecorator(framework=StarletteFramework, jsonifier=self.jsonifier)
        return t.cast(Handler, decorate(call))


_UNPARSED = object()


def takes_only_a_json_body(function: t.Callable[..., t.Any], spec: t.Any) -> bool:
    """True if Connexion's parameter decorator would call `function(body=<the JSON body>)`
    and nothing else: an async handler whose one argument is `body`; an operation with no
    parameters whose request body is required, not nullable, JSON only and not renamed
    (`x-body-name`). Then the body is never absent or null (the validator refuses that)."""
    arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
    return bool(
        asyncio.iscoroutinefunction(function)
        and arguments == ["body"]
        and not has_kwargs
        and not spec.parameters
        and spec.method.upper() != "TRACE"
        and spec.request_body.get("required", False)
        and not is_nullable(spec.body_definition())
        and spec.body_name(None) == "body"
        and list(spec.consumes) == ["application/json"]
    )


class _Api(AsyncApi):
    def make_operation(self, operation: t.Any) -> _Operation:
        built: _Operation = _Operation.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )
        return built


class _RequestValidation(RequestValidationOperation):
    """Connexion's request validation (RequestValidationOperation.__call__, same steps in
    the same order) with its validators built once per operation, and per content type for
    the first few content types seen (a client chooses the Content-Type: the cache is
    bounded). The validators keep no request state."""

    _MAX_BODY_VALIDATORS = 8
    _parameters: t.Any = None
    _bodies: dict[tuple[str, str], t.Any]

    async def __call__(self, scope_: Scope, receive_: Receive, send: Send) -> None:
        if self._parameters is None:
            uri_parser = self._operation._uri_parser_class(
                self._operation.parameters, self._operation.body_definition()
            )
            self._parameters = self._validator_map["parameter"](
                self._operation.parameters,
                uri_parser=uri_parser,
                strict_validation=self.strict_validation,
                security_query_params=self.security_query_params,
            )
            self._bodies = {}
        self._parameters.validate(scope_)

        key = self.extract_content_type(scope_["headers"])
        if key in self._bodies:
            validator = self._bodies[key]  # its mime type was accepted before
        else:
            self.validate_mime_type(key[0])
            validator = self._body_validator(*key)
            if len(self._bodies) < self._MAX_BODY_VALIDATORS:
                self._bodies[key] = validator
        if validator is not None:
            receive_, scope_ = await validator.wrap_receive(receive_, scope=scope_)
        await self.next_app(scope_, receive_, send)

    def _body_validator(self, mime_type: str, encoding: str) -> t.Any:
        spec = self._operation
        schema = spec.body_schema(mime_type)
        if not schema:
            return None
        try:
            validator_class = self._validator_map["body"][mime_type]
        except KeyError:
            log.info("Skipping validation: no validator for content type %s.", mime_type)
            return None
        return validator_class(
            schema=schema,
            required=spec.request_body.get("required", False),
            nullable=is_nullable(spec.body_definition(mime_type)),
            encoding=encoding,
            strict_validation=self.strict_validation,
            uri_parser=spec.uri_parser_class(spec.parameters, spec.body_definition()),
        )


class _RequestValidationApi(RequestValidationAPI):
    def make_operation(self, operation: t.Any) -> _RequestValidation:
        return _RequestValidation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class _RequestValidationMiddleware(RequestValidationMiddleware):
    api_cls = _RequestValidationApi


class _Docs(SwaggerUIMiddleware):
    """Connexion's Swagger UI middleware. Its routes (`<base>/openapi.json`,
    `<base>/openapi.yaml`, `<base>/ui` and below) all contain `/openapi.` or `/ui`; a path
    with neither cannot match one, nor redirect to one, so it goes straight on instead of
    through the router (~40 us per request)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and "/ui" not in path and "/openapi." not in path:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


#: Connexion's middleware stack, with the two above in their places.
MIDDLEWARES = [
    {
        SwaggerUIMiddleware: _Docs,
        RequestValidationMiddleware: _RequestValidationMiddleware,
    }.get(middleware, middleware)
    for middleware in ConnexionMiddleware.default_middlewares
]


class ServiceApp(connexion.AsyncApp):
    """`connexion.AsyncApp` whose operations are decorated once (module docstring)."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        kwargs.setdefault("middlewares", MIDDLEWARES)
        super().__init__(*args, **kwargs)
        # AsyncApp builds its innermost app itself; it adds the APIs later, with this class.
        self._middleware_app.api_cls = _Api


def app_class(fast_paths: bool) -> type[connexion.AsyncApp]:
    """`ServiceApp`, or Connexion's own `AsyncApp` when FAST_PATHS is off or the installed
    Connexion is not the release this module was written for (one warning)."""
    return ServiceApp if fast_paths and FAST_PATH.check() else connexion.AsyncApp


@functools.cache
def _accepts_kwarg(function: t.Callable[..., t.Any], keyword: str) -> bool:
    arguments, has_kwargs = inspect_function_arguments(function)
    return bool(has_kwargs or keyword in arguments)


class SignatureOnce:
    """Mixin for Connexion security handlers: whether a check function takes a keyword
    (`request`, `required_scopes`) is asked twice per request; the answer never changes."""

    _accepts_kwarg = staticmethod(_accepts_kwarg)
