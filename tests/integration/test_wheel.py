"""The service as a deployer installs it: the wheel, built from this checkout, installed (not
editable) into a fresh virtualenv from the lock file, run from an empty directory with no
checkout, no Node.js and no node_modules on its path.

The wheel is built from a copy of the checkout's files (`git ls-files`): an in-tree build
reuses build/lib/, where files deleted from the source live on and would ship.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import services
from tests.helpers import PUBLISHER_KEY, ROOT, unique
from tests.integration.test_js_client import (
    assert_envelope,
    fresh_recovery,
    missed_events,
    publish,
)
from tests.programs import run_js_client
from tests.server import Server

# `sqlite`: run once, in make test's SQLite pass. The installed server runs on SQLite and
# `migrate` on a PostgreSQL database of its own, whichever pass this is.
pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.sqlite]

LOCK = ROOT / "requirements" / "runtime.txt"
PACKAGE = "claims_realtime"
#: Generic names the repository's top-level folders have: none may land in site-packages.
FOREIGN = ("models", "handlers", "realtime", "tools", "tests", "openapi", "console")
#: Served by the checkout, so by the installed wheel too (GET -> 200).
PAGES = (
    "/api/v1/realtime-subscriptions",
    "/api/v1/realtime-subscriptions/api/v1/realtime-subscriptions",
    "/api/v1/health/live",
    "/api/v1/ui/",
    "/api/v1/ui/swagger-ui-bundle.js",
    "/api/v1/openapi.json",
    "/api/v1/realtime-subscriptions/api/v1/openapi.json",
    "/api/v1/asyncapi.yaml",
    "/console/",
    "/console/console.js",
    "/console/vendor/socket.io.esm.min.js",
    "/metrics",
)
#: Our own fixed-file routes answer HEAD too.
HEAD_PAGES = ("/api/v1/asyncapi.yaml", "/console/", "/console/vendor/socket.io.esm.min.js")


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; its stdout, or a failure showing all its output."""
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        command = " ".join(map(str, args))
        pytest.fail(f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Installed:
    venv: Path
    site_packages: Path
    #: What installing the wheel (after its dependencies) added to site-packages.
    added: frozenset[str]
    #: A directory with nothing in it: every installed program runs from there.
    empty: Path

    def program(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, **settings: str) -> dict[str, str]:
        """A clean environment: only the virtualenv's programs (no node), and `settings`."""
        return {"PATH": str(self.venv / "bin"), **settings}


def copy_checkout(target: Path) -> None:
    """The checkout's tracked and new (not ignored) files, symlinks kept as links."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        source, copy = ROOT / name, target / name
        if not source.is_symlink() and not source.is_file():
            continue  # deleted in the work tree
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), copy)
        else:
            shutil.copy2(source, copy)


def runtime_requirements() -> list[str]:
    """pyproject.toml's dependencies, for a checkout that has no lock file."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        requirements: list[str] = tomllib.load(file)["project"]["dependencies"]
    return requirements


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("wheel")
    copy_checkout(work / "source")
    build = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet")
    run(*build, "-w", work / "dist", work / "source", cwd=work)
    [wheel] = (work / "dist").glob(f"{PACKAGE}-*.whl")

    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=work)
    python = venv / "bin" / "python"
    pip = (python, "-m", "pip", "install", "--quiet")
    # Dependencies first (from the lock, as the README's Deploying section says), so that the
    # wheel's own install shows exactly what it adds to site-packages.
    if LOCK.is_file():
        run(*pip, "--require-hashes", "-r", LOCK, cwd=work)
    else:
        run(*pip, *runtime_requirements(), cwd=work)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site_packages = Path(run(python, "-c", purelib, cwd=work).strip())
    before = {path.name for path in site_packages.iterdir()}
    run(*pip, "--no-deps", wheel, cwd=work)
    after = {path.name for path in site_packages.iterdir()}
    # The lock (or pyproject.toml's list) satisfies everything the wheel requires.
    run(python, "-m", "pip", "check", cwd=work)

    empty = work / "empty"
    empty.mkdir()
    yield Installed(venv, site_packages, frozenset(after - before), empty)
    assert list(empty.iterdir()) == [], "an installed program wrote into its working directory"


def test_the_wheel_installs_one_import_package_with_its_data(installed: Installed) -> None:
    [dist_info] = [name for name in installed.added if name.endswith(".dist-info")]
    assert installed.added == {PACKAGE, dist_info}
    assert dist_info.startswith(f"{PACKAGE}-")
    for name in FOREIGN:
        assert not (installed.site_packages / name).exists(), name
    record = (installed.site_packages / dist_info / "RECORD").read_text(encoding="utf-8")
    for line in record.splitlines():
        path = line.split(",")[0]
        assert path.startswith((f"{PACKAGE}/", dist_info + "/", "../../../bin/")), path

    package = installed.site_packages / PACKAGE
    assert not [path for path in package.rglob("*") if path.is_symlink()], "links, not copies"
    for data in (
        "openapi/claims-realtime.yaml",
        "openapi/asyncapi.yaml",
        "console_assets/index.html",
        "console_assets/vendor/socket.io.esm.min.js",
        "console_assets/vendor/VERSION",
        "console_assets/vendor/licenses/socket.io-client.txt",
        "models/migrations/0001_initial.py",
        "models/migrations/0002_placements_without_event_constraint.py",
    ):
        assert (package / data).is_file(), data
    # Development tools stay in the checkout.
    assert not (package / "tools").exists()

    where = "import claims_realtime.app as app; print(app.__file__)"
    python = installed.program("python")
    imported = run(python, "-c", where, cwd=installed.empty, env=installed.env()).strip()
    assert Path(imported) == package / "app.py"


async def test_the_installed_server_serves_everything_and_replays_what_a_client_missed(
    installed: Installed, tmp_path: Path
) -> None:
    server = Server(tmp_path / "data")
    server.cli = installed.program("claims-realtime")
    server.cwd = installed.empty
    server.env = installed.env(DATA_DIR=str(server.data_dir), PUBLISHER_KEY=PUBLISHER_KEY)
    server.start()
    try:
        await check_pages(server)
        await check_drop_and_replay(server, tmp_path)
    finally:
        server.stop()


async def check_pages(server: Server) -> None:
    async with server.client() as http:
        for path in PAGES:
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text[:300])
        for path in HEAD_PAGES:
            head = await http.head(path)
            assert (head.status_code, head.content) == (200, b""), path
        # Byte for byte the checkout's files, read from the installed package's data.
        asyncapi = await http.get("/api/v1/asyncapi.yaml")
        assert asyncapi.headers["content-type"] == "application/yaml"
        assert asyncapi.content == (ROOT / "openapi" / "asyncapi.yaml").read_bytes()
        bundle = await http.get("/console/vendor/socket.io.esm.min.js")
        vendored = ROOT / "console" / "vendor" / "socket.io.esm.min.js"
        assert bundle.content == vendored.read_bytes()
        page = (await http.get("/console/")).text
        assert 'href="../api/v1/asyncapi.yaml"' in page
        document = (await http.get("/api/v1/openapi.json")).json()
        assert "/realtime-subscriptions/{channel_id}/reconnect" in document["paths"]


async def check_drop_and_replay(server: Server, tmp_path: Path) -> None:
    """The official JS client: events 1-2 live; dropped while 3-5 are published; PUT
    .../reconnect counts them; on resume exactly 3-5 arrive, each once."""
    user = unique("usr")
    channel = await server.subscribe("user", user_id=user)
    channel_id = channel["channel_id"]
    async with server.client() as http:
        doubled = f"/api/v1/realtime-subscriptions/api/v1/realtime-subscriptions/{channel_id}"
        detail = await http.get(doubled)
        assert (detail.status_code, detail.json()["channel_id"]) == (200, channel_id)

    def event(n: int) -> dict[str, Any]:
        return {
            "event_type": "status_changed",
            "claim_id": unique("clm"),
            "organisation_id": unique("org"),
            "user_id": user,
            "data": {"n": n},
        }

    async with run_js_client(tmp_path, channel, transports=["websocket"]) as client:
        assert (await client.expect("recovery"))["payload"] == fresh_recovery(channel_id)
        expected = [await publish(server, **event(n)) for n in (1, 2)]
        live = await client.events(2)

        # client.mjs holds its automatic reconnection until "release".
        await client.send("drop")
        await client.expect("disconnect")
        expected += [await publish(server, **event(n)) for n in (3, 4, 5)]
        assert await missed_events(server, channel_id, 3) == 3
        assert (await client.expect("auth"))["auth"] == {"last_sequence": 2}
        await client.send("release")

        recovery = await client.expect("recovery")
        assert recovery["payload"] == {
            **fresh_recovery(channel_id),
            "resumed_from": 2,
            "head_sequence": 5,
            "replayed": 3,
        }
        replayed = await client.events(3)
        await client.send("quit")
        assert await client.finish() == 0, client.report()

    assert client.sequences() == [1, 2, 3, 4, 5], client.report()
    for sequence, payload in enumerate(live + replayed, 1):
        assert_envelope(payload, channel_id, sequence, expected[sequence - 1])


def test_the_installed_migrate_creates_and_then_keeps_a_postgresql_schema(
    installed: Installed,
) -> None:
    services.require_postgres()
    url = asyncio.run(services.create_database("crt_wheel"))
    try:
        migrate = (installed.program("claims-realtime"), "migrate")
        env = installed.env(DATABASE_URL=url, LOG_LEVEL="WARNING")
        first = run(*migrate, cwd=installed.empty, env=env)
        assert "applied models.0001_initial" in first, first
        assert run(*migrate, cwd=installed.empty, env=env).strip() == "schema is up to date"
    finally:
        asyncio.run(services.drop_database(url))
