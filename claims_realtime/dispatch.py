"""Calling a handler: the per-operation work Connexion 3.3 redoes on every request, done once.

For each request Connexion 3.3's `AsyncOperation` builds its decorator chain anew (parameter
and response decorators, and the URI parser from the operation's parameters and body
definition), inspecting the handler's signature each time with `inspect.signature`; each
security handler inspects its check function twice more. None of it depends on the request.
In-process, a 10-event ingestion batch ran ~2,470 Python calls, 3 of them signature
inspections (~120 us of its ~2.5 ms profiled).

`ServiceApp` is `connexion.AsyncApp` with its operations built once, on their first request
(the URI parser needs the operation, which Connexion only provides while routing a request);
`SignatureOnce` is the security handlers' part. What a handler receives is unchanged: the
same decorators run in the same order on the same request objects.
"""

from __future__ import annotations

import functools
import typing as t

import connexion
from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.context import receive, scope
from connexion.decorators import StarletteDecorator
from connexion.frameworks.starlette import Starlette as StarletteFramework
from connexion.uri_parsing import AbstractURIParser
from connexion.utils import inspect_function_arguments
from starlette.types import Receive, Scope, Send


class _Operation(AsyncOperation):
    """An `AsyncOperation` whose decorated handler and URI parser are built once."""

    _handler: t.Callable[..., t.Awaitable[t.Any]] | None = None
    _uri_parser: AbstractURIParser | None = None

    async def __call__(self, scope_: Scope, receive_: Receive, send: Send) -> t.Any:
        if self._handler is None:
            decorator = StarletteDecorator(
                pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
            )
            self._uri_parser = decorator.uri_parser
            self._handler = decorator.decorate(self._fn)
        # As Connexion's ASGIDecorator does: the request from the context's scope and receive.
        request = StarletteFramework.get_request(
            uri_parser=self._uri_parser, scope=scope, receive=receive
        )
        response = await self._handler(request)
        return await response(scope_, receive_, send)


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
