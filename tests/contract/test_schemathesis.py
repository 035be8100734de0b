"""Schemathesis, every check on, against the real server at both mount points.

`schemathesis run` executes its four phases on every operation: the document's examples,
coverage of each constraint's boundaries, positive and negative fuzzing (`--mode all`),
and stateful sequences through the OpenAPI links (create -> get -> list events ->
reconnect -> delete; publish or batch -> get event).
Its configuration (schemathesis.toml) only widens which statuses count as accepting valid
input (410 for a closed channel); no check is switched off.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from claims_realtime.app import BASE_PATHS, CANONICAL_BASE, load_spec
from tests.helpers import PUBLISHER_KEY, ROOT
from tests.server import Server

pytestmark = pytest.mark.integration  # it drives a real server process

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
HTTP_VERBS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_postgres_url: str | None
) -> Iterator[Server]:
    """The module's server, on a database of its own (see module_postgres_url)."""
    env = {"DATABASE_URL": module_postgres_url} if module_postgres_url else {}
    srv = Server(tmp_path_factory.mktemp("server"), **env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# The doubled prefix routes to the same operations as the canonical one: on PostgreSQL the
# canonical one is enough (the storage is what that pass is for).
@pytest.mark.parametrize(
    "base_path",
    [
        pytest.param(path, marks=[] if path == CANONICAL_BASE else [pytest.mark.sqlite_pass])
        for path in BASE_PATHS
    ],
)
def test_schemathesis_finds_no_failure(server: Server, base_path: str, tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{server.base_url}{base_path}/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--header",
            f"X-Publisher-Key: {PUBLISHER_KEY}",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
            "--no-color",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Guard against a run that "passes" by testing nothing: every operation was exercised.
    operations = sum(
        1 for item in load_spec()["paths"].values() for verb in item if verb in HTTP_VERBS
    )
    assert f"Tested: {operations}" in output, output
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output
    # Warnings (e.g. "most random channel ids were 404") are advice, not failures.
    assert "Failures:" not in output, output
