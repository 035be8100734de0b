"""Copy the console's Socket.IO browser bundle from node_modules into console/vendor/.

A wheel user has no node_modules, so the bundle the console page imports ships inside the
package, with the licence of every npm package compiled into it and the version it came from.
`make vendor` runs this after `npm ci` installed a new socket.io-client from package-lock.json;
tests/unit/test_vendored_client.py fails until it has.

    python -m tools.vendor_console
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
VENDOR = ROOT / "console" / "vendor"
CLIENT = "socket.io-client"
BUNDLE = ("socket.io.esm.min.js", "socket.io.esm.min.js.map")
#: npm packages compiled into the bundle, by the folder name its source map gives them
#: (Socket.IO's build names @socket.io/component-emitter by its repository's folder).
BUNDLED = {
    "engine.io-client": "engine.io-client",
    "engine.io-parser": "engine.io-parser",
    "socket.io-parser": "socket.io-parser",
    "socket.io-component-emitter": "@socket.io/component-emitter",
}
#: Written by hand, kept as is.
README = "README.md"
VERSION = "VERSION"


def locked_version(root: Path = ROOT) -> str:
    """socket.io-client's version in package-lock.json."""
    lock = json.loads((root / "package-lock.json").read_text(encoding="utf-8"))
    return str(lock["packages"][f"node_modules/{CLIENT}"]["version"])


def installed_version(node_modules: Path = NODE_MODULES) -> str:
    package = json.loads((node_modules / CLIENT / "package.json").read_text(encoding="utf-8"))
    return str(package["version"])


def bundled_packages(node_modules: Path = NODE_MODULES) -> list[str]:
    """The npm packages whose code the bundle holds, socket.io-client first. A folder the
    source map names that BUNDLED does not know is an error: its licence must ship too."""
    source_map = json.loads((node_modules / CLIENT / "dist" / BUNDLE[1]).read_text("utf-8"))
    found: set[str] = set()
    for source in source_map["sources"]:
        parts = Path(source).parts  # ../../engine.io-client/build/... or ../build/... (own)
        if parts[:2] != ("..", ".."):
            continue
        if parts[2] not in BUNDLED:
            raise SystemExit(f"the bundle holds code of {parts[2]!r}: add it to BUNDLED")
        found.add(BUNDLED[parts[2]])
    return [CLIENT, *sorted(found)]


def licence_name(package: str) -> str:
    """licenses/<file> for an npm package: @socket.io/component-emitter -> socket.io-...txt."""
    return package.lstrip("@").replace("/", "-") + ".txt"


def copies(node_modules: Path = NODE_MODULES, vendor: Path = VENDOR) -> list[tuple[Path, Path]]:
    """(source in node_modules, copy in console/vendor) for every vendored file."""
    pairs = [(node_modules / CLIENT / "dist" / name, vendor / name) for name in BUNDLE]
    for package in bundled_packages(node_modules):
        pairs.append(
            (node_modules / package / "LICENSE", vendor / "licenses" / licence_name(package))
        )
    return pairs


def main() -> int:
    locked, installed = locked_version(), installed_version()
    if installed != locked:
        raise SystemExit(
            f"node_modules has {CLIENT} {installed}, package-lock.json {locked}: run `npm ci`"
        )
    licences = VENDOR / "licenses"
    shutil.rmtree(licences, ignore_errors=True)  # a package no longer bundled goes too
    licences.mkdir(parents=True)
    for source, target in copies():
        shutil.copyfile(source, target)
        print(f"{target.relative_to(ROOT)} <- {source.relative_to(ROOT)}")
    (VENDOR / VERSION).write_text(f"{locked}\n", encoding="utf-8")
    print(f"{(VENDOR / VERSION).relative_to(ROOT)}: {CLIENT} {locked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
