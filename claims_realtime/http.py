"""Connexion's resolver, and the one mapping from errors to `application/problem+json`.

Request validation is in claims_realtime.validation; the ASGI guards in front of Connexion
in claims_realtime.guards.
"""

from __future__ import annotations

import logging
import re
import typing as t

from connexion import problem
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.resolver import Resolver

from claims_realtime.handlers.problems import PROBLEM_JSON
from claims_realtime.models.db import database_unavailable
from claims_realtime.models.errors import DomainError

log = logging.getLogger(__name__)


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
