"""`/console`: the live event console, a static page served by the service itself.

The page (console/ at the repository's top level: HTML, one ES module, one stylesheet) needs
no build step. Its one dependency, the official Socket.IO client, is the npm package that
`npm ci` installs from the repository's package-lock.json (`make run` runs it); its browser
bundle is served from node_modules, so the page loads nothing from anywhere else.

Like `/metrics`, the console is not an operation of the OpenAPI document but a small ASGI
route in front of it (claims_realtime/app.py): only a fixed list of files is served, so no
request path ever reaches the file system.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.responses import FileResponse, RedirectResponse, Response

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "console"
VENDOR = ROOT / "node_modules" / "socket.io-client" / "dist"

PREFIX = "/console"
ALLOWED = ("GET", "HEAD")
INSTALL_HINT = (
    "The console's Socket.IO client is not installed: run `npm ci` in the repository "
    "(`make run` does it), then reload."
)
#: The page talks only to this service: its own files, its API and its Socket.IO endpoint
#: (`websocket_url` may name another host when PUBLIC_URL is set, hence ws:/wss:).
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


class ConsoleRoute:
    """Serves `/console/` and its files; passes every other request on to `app`."""

    def __init__(self, app: Any, assets: Path = ASSETS, vendor: Path = VENDOR) -> None:
        self.app = app
        #: Path under /console/ -> (file, media type). The vendor bundle's source map too, so
        #: that the browser's developer tools show the client's sources.
        self.files: dict[str, tuple[Path, str]] = {
            "": (assets / "index.html", "text/html; charset=utf-8"),
            "console.js": (assets / "console.js", "text/javascript; charset=utf-8"),
            "console.css": (assets / "console.css", "text/css; charset=utf-8"),
            "vendor/socket.io.esm.min.js": (
                vendor / "socket.io.esm.min.js",
                "text/javascript; charset=utf-8",
            ),
            "vendor/socket.io.esm.min.js.map": (
                vendor / "socket.io.esm.min.js.map",
                "application/json",
            ),
        }
        self.bundle = vendor / "socket.io.esm.min.js"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        response = self._respond(scope["method"], path)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        await response(scope, receive, send)

    def _respond(self, method: str, path: str) -> Response:
        if method not in ALLOWED:
            detail = f"{method} is not allowed here; allowed: {', '.join(ALLOWED)}."
            return _problem(405, "Method Not Allowed", detail, {"allow": ", ".join(ALLOWED)})
        if path == PREFIX:  # relative asset URLs need the trailing slash
            return RedirectResponse(PREFIX + "/", status_code=308)
        name = path[len(PREFIX) + 1 :]
        if name not in self.files:
            return _problem(404, "Not Found", f"No console file {path}.")
        if not self.bundle.is_file():
            # A checkout without node_modules: say how to fix it, on the page itself too.
            if name == "":
                return Response(_install_page(), 503, media_type="text/html; charset=utf-8")
            return _problem(503, "Service Unavailable", INSTALL_HINT)
        file, media_type = self.files[name]
        return FileResponse(file, media_type=media_type)


def _problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Response(
        json.dumps(body), status, headers=headers, media_type="application/problem+json"
    )


def _install_page() -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Console not installed</title>"
        f"<h1>Console not installed</h1><p>{INSTALL_HINT}</p></html>"
    )
