"""console/vendor/ is exactly the locked socket.io-client's browser bundle, with the licence of
every npm package compiled into it: a package-lock.json bump without `make vendor` fails here."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT
from tools import vendor_console

VENDOR = ROOT / "console" / "vendor"


@pytest.fixture(scope="module")
def locked() -> str:
    """The locked version, once node_modules is known to hold it (`make test` runs npm ci)."""
    version = vendor_console.locked_version()
    if not (ROOT / "node_modules" / vendor_console.CLIENT / "package.json").is_file():
        pytest.fail("node_modules/socket.io-client is missing: run `make test` (it runs npm ci)")
    installed = vendor_console.installed_version()
    assert installed == version, f"node_modules has {installed}, the lock {version}: run npm ci"
    return version


def test_the_vendored_version_is_the_locked_one(locked: str) -> None:
    vendored = (VENDOR / vendor_console.VERSION).read_text(encoding="utf-8").strip()
    assert vendored == locked, f"console/vendor is {vendored}, the lock {locked}: `make vendor`"


def test_each_vendored_file_is_the_npm_package_s_own(locked: str) -> None:
    pairs = vendor_console.copies()
    for source, copy in pairs:
        assert copy.read_bytes() == source.read_bytes(), f"{copy} differs: run `make vendor`"
    # Nothing else: a licence of a package no longer bundled would be stale.
    kept = {VENDOR / vendor_console.README, VENDOR / vendor_console.VERSION}
    present = {path for path in VENDOR.rglob("*") if path.is_file()}
    assert present == kept | {copy for _, copy in pairs}


def test_every_package_in_the_bundle_has_its_licence_vendored(locked: str) -> None:
    packages = vendor_console.bundled_packages()
    assert packages[0] == "socket.io-client"
    assert "@socket.io/component-emitter" in packages and "engine.io-client" in packages
    for package in packages:
        licence = VENDOR / "licenses" / vendor_console.licence_name(package)
        assert "MIT" in licence.read_text(encoding="utf-8"), package


def test_the_console_imports_the_vendored_bundle() -> None:
    script = (ROOT / "console" / "console.js").read_text(encoding="utf-8")
    assert 'import { io } from "./vendor/socket.io.esm.min.js"' in script
