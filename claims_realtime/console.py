"""`/console`: the live event console, a static page served by the service itself.

The page (console/ at the repository's top level: HTML, three ES modules, one stylesheet)
needs no build step. Its one dependency, the official Socket.IO client, is the npm package's
own browser bundle, vendored in console/vendor/ with its licences and version (`make vendor`
re-copies it from node_modules), so the page loads nothing from anywhere else and an
installed wheel needs neither Node.js nor node_modules. The files are package data
(claims_realtime/console_assets -> ../console; see claims_realtime.static).

Like `/metrics`, the console is not an operation of the OpenAPI document but a small ASGI
route in front of it (claims_realtime/app.py): only a fixed list of files is served, so no
request path ever reaches the file system.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import RedirectResponse, Response

from claims_realtime.static import ALLOWED, file_response, not_allowed, package_file, problem

PREFIX = "/console"
#: The package data folder that holds console/.
ASSETS = "console_assets"
#: Path under /console/ -> (file under console/, media type). The bundle's source map too, so
#: that the browser's developer tools show the client's sources.
FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "common.js": ("common.js", "text/javascript; charset=utf-8"),
    "history.js": ("history.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
    "vendor/socket.io.esm.min.js": (
        "vendor/socket.io.esm.min.js",
        "text/javascript; charset=utf-8",
    ),
    "vendor/socket.io.esm.min.js.map": ("vendor/socket.io.esm.min.js.map", "application/json"),
}
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

    def __init__(self, app: Any) -> None:
        self.app = app
        # Read once (about 250 KiB in all): requests never touch the file system.
        self.files: dict[str, tuple[bytes, str]] = {
            name: (package_file(ASSETS, *file.split("/")), media_type)
            for name, (file, media_type) in FILES.items()
        }

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
            return not_allowed(method)
        if path == PREFIX:  # relative asset URLs need the trailing slash
            return RedirectResponse(PREFIX + "/", status_code=308)
        name = path[len(PREFIX) + 1 :]
        if name not in self.files:
            return problem(404, "Not Found", f"No console file {path}.")
        body, media_type = self.files[name]
        return file_response(method, body, media_type)
