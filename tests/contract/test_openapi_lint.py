"""The OpenAPI document lints clean under Redocly CLI's recommended rules (npm `@redocly/cli`,
pinned in package.json), less what redocly.yaml switches off, each with its reason."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from claims_realtime.app import load_spec
from claims_realtime.auth import BEARER_SCHEME, document_for_mode
from tests.helpers import ROOT
from tests.programs import node_executable

REDOCLY = ROOT / "node_modules" / "@redocly" / "cli" / "bin" / "cli.js"
DOCUMENT = "openapi/claims-realtime.yaml"
#: No usage data sent, no update check: the run stays offline.
QUIET = {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}


@pytest.mark.node
def test_openapi_document_lints_clean() -> None:
    node = node_executable()
    if not REDOCLY.is_file():
        pytest.fail(f"{REDOCLY} is missing: run `make test` (it runs `npm ci`); never skipped")
    result = subprocess.run(
        [node, str(REDOCLY), "lint", DOCUMENT, "--format=json"],
        cwd=ROOT,
        env={**os.environ, **QUIET},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    problems = [
        f"{p['severity']} {p['ruleId']}: {p['message']} at {p['location'][0]['pointer']}"
        for p in report["problems"]
    ]
    assert report["totals"]["errors"] == 0 and report["totals"]["warnings"] == 0, problems
    # The ignored problems (.redocly.lint-ignore.yaml): BearerAuth, used only by jwt mode, and
    # FallbackWebhook, the body of the requests the service sends, which no operation takes.
    assert report["totals"]["ignored"] == 2, report["totals"]
    assert "Your config has" not in result.stderr, result.stderr  # redocly.yaml is valid
    assert result.returncode == 0, result.stderr


def test_security_exceptions_are_the_operations_jwt_mode_secures() -> None:
    """redocly.yaml exempts from `security-defined` exactly the paths whose operations
    AUTH_MODE=jwt gives the bearer requirement, and none of them declares `security` itself."""
    config = yaml.safe_load((ROOT / "redocly.yaml").read_text(encoding="utf-8"))
    exempt = {e["path"] for e in config["rules"]["security-defined"]["exceptions"]}
    assert all(set(e) == {"path"} for e in config["rules"]["security-defined"]["exceptions"])
    jwt = document_for_mode(load_spec(), "jwt")
    secured = {
        path
        for path, item in jwt["paths"].items()
        for operation in item.values()
        if isinstance(operation, dict) and operation.get("security") == [{BEARER_SCHEME: []}]
    }
    assert exempt == secured
    verbs = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    for path in exempt:
        for verb in verbs.intersection(jwt["paths"][path]):
            assert jwt["paths"][path][verb]["security"] == [{BEARER_SCHEME: []}], (verb, path)
            assert "security" not in load_spec()["paths"][path][verb], (verb, path)
