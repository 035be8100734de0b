"""`application/problem+json` bodies (RFC 9457) built outside Connexion's error handlers: by
the routes and guards in front of the document, and for every 405 of the service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PROBLEM_JSON = "application/problem+json"


def problem_body(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail}


def method_not_allowed(method: str, allowed: Iterable[str]) -> tuple[dict[str, Any], str]:
    """The one 405: its problem body and its `Allow` header for `method` on a resource that
    answers only `allowed`. Every 405 of the service is built here, whatever sends it."""
    allow = ", ".join(allowed)
    detail = f"{method} is not allowed here; allowed: {allow}."
    return problem_body(405, "Method Not Allowed", detail), allow
