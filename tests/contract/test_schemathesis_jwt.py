"""Schemathesis against a real server in AUTH_MODE=jwt: every check on, `ignored_auth` included.

`ignored_auth` takes each request that succeeded with our bearer token and replays it without
credentials and with invalid ones; both must be refused. The token belongs to usr_coord99,
coordinator of org_001 (the document's examples), so creation, listing, and the stateful
get/reconnect/delete of the channels it creates succeed and get replayed. A second run points
the jwt-mode document at a public-mode server, and must fail that very check: proof that
the check is live, reaches all seven operations with these examples, and would catch one that
does not enforce its security.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claims_realtime.app import CANONICAL_BASE
from tests.helpers import PUBLISHER_KEY, ROOT
from tests.server import Server
from tests.tokens import JWT_SECRET, make_token

pytestmark = pytest.mark.integration  # it drives real server processes

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
TOKEN = make_token("usr_coord99", {"org_001": ["coordinator"]}, expires_in=3600)


def schemathesis(schema: str, *args: str, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            schema,
            *args,
            "--header",
            f"Authorization: Bearer {TOKEN}",
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


@pytest.fixture
def own_server(tmp_path: Path, module_postgres_url: str | None) -> Iterator[Server]:
    """As conftest's, on the module's own database (see module_postgres_url)."""
    env = {"DATABASE_URL": module_postgres_url} if module_postgres_url else {}
    srv = Server(tmp_path / "server", **env)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def jwt_server(own_server: Server) -> Server:
    own_server.env.update({"AUTH_MODE": "jwt", "JWT_SECRET": JWT_SECRET})
    own_server.ready_path = "/api/v1/health/ready"
    own_server.start()
    return own_server


def test_schemathesis_jwt_mode_finds_no_failure(jwt_server: Server, tmp_path: Path) -> None:
    # The server really is in jwt mode: no token, no service.
    assert httpx.get(f"{jwt_server.base_url}/api/v1/realtime-subscriptions").status_code == 401

    result = schemathesis(
        f"{jwt_server.base_url}{CANONICAL_BASE}/openapi.json",
        "--checks",
        "all",
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        report=tmp_path / "junit.xml",
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Failures:" not in output, output
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output


@pytest.fixture
def public_server(tmp_path: Path, module_postgres_url: str | None) -> Iterator[Server]:
    """A public-mode server with no per-user channel limit: with --database=postgres it
    shares the module's database with the jwt run before, which can leave usr_coord99, the
    examples' user, at its limit of 100 channels; POST /user would then answer 409, not
    201, and the check below would see 6 operations."""
    env = {"MAX_CHANNELS_PER_USER": "0"}
    if module_postgres_url:
        env["DATABASE_URL"] = module_postgres_url
    srv = Server(tmp_path / "public", **env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_ignored_auth_catches_an_api_that_does_not_enforce_it(
    jwt_server: Server, public_server: Server, tmp_path: Path
) -> None:
    # The jwt-mode document (bearer declared on the seven operations) against a public-mode
    # server, which ignores the token: ignored_auth must flag the operations it succeeded on.
    # The channel-id operations get their ids from what the list answers, filtered by a
    # user_id Schemathesis takes from the examples (usr_coord99 or usr_84cd12ef, depending on
    # the document): a channel of each makes sure the list hands it a real one either way.
    for user_id in ("usr_coord99", "usr_84cd12ef"):
        seeded = httpx.post(
            f"{public_server.base_url}{CANONICAL_BASE}/realtime-subscriptions/organisation",
            json={"organisation_id": "org_001", "user_id": user_id},
        )
        assert seeded.status_code == 201, seeded.text
    response = httpx.get(f"{jwt_server.base_url}{CANONICAL_BASE}/openapi.json")
    document = tmp_path / "jwt-openapi.json"
    document.write_text(json.dumps(response.json()))

    result = schemathesis(
        str(document),
        "--url",
        f"{public_server.base_url}{CANONICAL_BASE}",
        "--checks",
        "ignored_auth",
        "--phases",
        "examples",
        report=tmp_path / "junit.xml",
    )

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # Every one of the seven operations succeeded without credentials and was flagged.
    assert "API accepts requests without authentication: 7" in output, output
    for operation in (
        "GET /realtime-subscriptions",
        "POST /realtime-subscriptions/organisation",
        "POST /realtime-subscriptions/user",
        "GET /realtime-subscriptions/{channel_id}",
        "PUT /realtime-subscriptions/{channel_id}/reconnect",
        "DELETE /realtime-subscriptions/{channel_id}",
        "GET /realtime-subscriptions/{channel_id}/events",
    ):
        assert f"_ {operation} _" in output, output
