"""Cross-origin access (CORS_ALLOWED_ORIGINS) for the HTTP API and for Socket.IO alike.

With no origins configured nothing is added: browsers keep pages of other origins from
reading our responses, and Engine.IO refuses a handshake whose Origin is not our own.
With origins configured, those (and our own) may call the API and open sockets; `*` allows
every origin. Credentials are never cookies here (bearer tokens and channel tokens travel
in headers and the Socket.IO auth payload), so no origin is granted cookies over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

#: What a browser page may send and read, besides the CORS-safelisted headers.
ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Publisher-Key", "X-Request-ID"]
EXPOSED_HEADERS = ["X-Request-ID", "WWW-Authenticate", "Allow"]
ALLOWED_METHODS = ["GET", "POST", "PUT", "DELETE"]
#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE = 600


def http_cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    """`app`, answering CORS (preflights included) for `origins`; `app` itself when none."""
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=["*"] if "*" in origins else list(origins),
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE,
    )


def socket_cors(origins: Sequence[str]) -> str | Callable[[str, dict[str, Any]], bool] | None:
    """Engine.IO's `cors_allowed_origins` for `origins`.

    None is Engine.IO's "same origin only"; a list there would drop the same origin, so a
    configured list becomes a check that accepts it and our own origin.
    """
    if not origins:
        return None
    if "*" in origins:
        return "*"
    allowed = frozenset(origins)

    def allow(origin: str, environ: dict[str, Any]) -> bool:
        if origin in allowed:
            return True
        host = environ.get("HTTP_HOST")
        return host is not None and origin == f"{environ.get('wsgi.url_scheme', 'http')}://{host}"

    return allow
