"""Calling a handler: the per-operation work Connexion 3.3 redoes on every request, done once.

For each request Connexion 3.3's `AsyncOperation` builds its decorator chain anew (parameter
and response decorators, and the URI parser from the operation's parameters and body
definition), inspecting the handler's signature each time with `inspect.signature`; each
security handler inspects its check function twice more. None of it depends on the request.
In-process, a 10-event ingestion batch ran ~2,470 Python calls, 3 of them signature
inspections (~120 us of its ~2.5 ms profiled).

`ServiceApp` is `connexion.AsyncApp` with its operations built once, on their first request
(the URI parser needs the operation, which Connexion only provides while routing a request);
`SignatureOnce` is the security handlers' part.

An operation whose only input is a required JSON body, with a handler taking just `body`
(subscribing, publishing), skips Connexion's parameter decorator: for it, that decorator
parsed the body a second time and worked out that there are no other arguments (~0.15 ms of
a 10-event batch's ~1 ms). It gets the body the request validator parsed and validated
(`claims_realtime.http.VALIDATED_BODY`). Every other operation goes through Connexion's
decorators unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import typing as t

import connexion
from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.context import operation, receive, scope
from connexion.decorators import StarletteDecorator
from connexion.decorators.parameter import unwrap_decorators
from connexion.decorators.response import AsyncResponseDecorator
from connexion.frameworks.starlette import Starlette as StarletteFramework
from connexion.lifecycle import ConnexionRequest
from connexion.uri_parsing import AbstractURIParser
from connexion.utils import inspect_function_arguments, is_nullable
from starlette.types import Receive, Scope, Send

from claims_realtime.http import VALIDATED_BODY

Handler = t.Callable[[ConnexionRequest], t.Awaitable[t.Any]]


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


class ServiceApp(connexion.AsyncApp):
    """`connexion.AsyncApp` whose operations are decorated once (module docstring)."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # AsyncApp builds its innermost app itself; it adds the APIs later, with this class.
        self._middleware_app.api_cls = _Api


@functools.cache
def _accepts_kwarg(function: t.Callable[..., t.Any], keyword: str) -> bool:
    arguments, has_kwargs = inspect_function_arguments(function)
    return bool(has_kwargs or keyword in arguments)


class SignatureOnce:
    """Mixin for Connexion security handlers: whether a check function takes a keyword
    (`request`, `required_scopes`) is asked twice per request; the answer never changes."""

    _accepts_kwarg = staticmethod(_accepts_kwarg)
