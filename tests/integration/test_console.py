"""The live console (/console/) end to end in a real headless Chromium, and how it is served.

Node runs tests/integration/js/console.mjs, which drives Debian's chromium with playwright-core
(both installed by the repository's own files: .ci/run and package-lock.json) and prints one
JSON line per step; this side publishes over HTTP while the page is away, and sets up the
channels whose history and receipts the page then reads. Screenshots are written to
test-artifacts/console-*.png.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from claims_realtime.app import load_spec
from tests.helpers import PUBLISHER_KEY, ROOT, assert_problem, unique
from tests.programs import run_node
from tests.server import Server

pytestmark = [pytest.mark.integration, pytest.mark.node]

SCRIPT = ROOT / "tests" / "integration" / "js" / "console.mjs"
ARTIFACTS = ROOT / "test-artifacts"
STEP = 30.0  # seconds: the bound of each step (the script bounds each wait in the page at 10 s)
PNG = b"\x89PNG\r\n\x1a\n"


def chromium_executable() -> str:
    """Debian's chromium: required under CI (.ci/run installs it), else skipped with why."""
    name = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: `apt-get install -y chromium` (.ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if not (ROOT / "node_modules" / "playwright-core" / "package.json").is_file():
        pytest.fail("node_modules/playwright-core is missing: run `make test` (it runs `npm ci`)")
    return path


def enum(name: str) -> list[str]:
    values: list[str] = load_spec()["components"]["schemas"][name]["enum"]
    return values


async def test_console_subscribes_publishes_drops_and_shows_the_replay(
    server: Server, tmp_path: Path
) -> None:
    chromium = chromium_executable()
    org, user, claim = unique("org"), unique("usr"), unique("clm")
    config = {
        "base_url": server.base_url,
        "chromium": chromium,
        "publisher_key": PUBLISHER_KEY,
        "organisation_id": org,
        "user_id": user,
        "claim_id": claim,
        "artifacts": str(ARTIFACTS),
    }
    for old in ARTIFACTS.glob("console-*.png"):
        old.unlink()
    async with run_node(tmp_path, str(SCRIPT), json.dumps(config)) as page:

        async def step(kind: str) -> dict[str, Any]:
            line = await page.expect(kind, timeout=STEP)
            assert "error" not in page.kinds(), page.report()
            return line

        # The forms are built from the OpenAPI document the server serves.
        ready = await step("ready")
        assert ready["url"] == f"{server.base_url}/console/"
        types = [option["text"].split(" — ")[0] for option in ready["operations"]]
        assert sorted(types) == sorted(enum("SubscriptionType"))
        assert ready["event_types"] == enum("EventType")
        assert ready["status_filter"] == ["", *enum("ChannelStatus")]
        assert ready["type_filter"] == ["", *enum("SubscriptionType")]

        # A bad organisation_id: the page shows the API's problem and marks the field.
        refused = await step("refused")
        assert refused["result"].startswith("400 Bad Request: "), refused
        assert refused["result"].endswith("(field: organisation_id)"), refused
        assert refused["invalid"] == ["organisation_id"]

        # An organisation subscription created in the page...
        subscribed = await step("subscribed")
        channel_id = subscribed["channel_id"]
        assert subscribed["websocket_url"] == f"ws://127.0.0.1:{server.port}/channels/{channel_id}"
        async with server.client() as http:
            detail = (await http.get(f"/api/v1/realtime-subscriptions/{channel_id}")).json()
        assert (detail["subscription_type"], detail["organisation_id"], detail["user_id"]) == (
            "organisation_claims",
            org,
            user,
        )
        # ...connected from the channel list: a fresh channel replays nothing.
        connected = await step("connected")
        assert connected["recovery"]["fields"] == {
            "channel_id": channel_id,
            "resumed_from": 0,
            "head_sequence": 0,
            "replayed": 0,
            "recovered": True,
            "first_available_sequence": 1,
            "unavailable": 0,
        }

        # An event published from the page (publisher key typed in) arrives live.
        published = await step("published")
        assert published["publish_form"] == {"organisation_id": org, "user_id": user}
        [first] = published["rows"]
        assert first["event_id"] in published["result"]
        assert first == {
            "sequence": 1,
            "event_id": first["event_id"],
            "replayed": False,
            "type": "claim_submitted",
            "claim_id": claim,
            "badge": "live",
        }

        # Dropped: two events published by the test are missed (and also recorded on a user
        # channel without a socket, whose receipts the page reads at the end)...
        await step("dropped")
        other_id = (await server.subscribe("user", user_id=user))["channel_id"]
        missed = []
        for event_type in ("status_changed", "comment_added"):
            result = await server.publish(
                event_type=event_type, claim_id=claim, organisation_id=org, user_id=user
            )
            assert result["channels"] == 2, result
            missed.append((event_type, result["event_id"]))
        await page.send("resume")

        # ...and replayed on resume, marked as replayed, each once.
        resumed = await step("resumed")
        assert resumed["recovery"]["fields"] == {
            "channel_id": channel_id,
            "resumed_from": 1,
            "head_sequence": 3,
            "replayed": 2,
            "recovered": True,
            "first_available_sequence": 1,
            "unavailable": 0,
        }
        assert resumed["recovery"]["summary"].startswith("Resumed after sequence 1: 2 event(s)")
        assert resumed["rows"] == [
            first,
            *(
                {
                    "sequence": sequence,
                    "event_id": event_id,
                    "replayed": True,
                    "type": event_type,
                    "claim_id": claim,
                    "badge": "replayed",
                }
                for sequence, (event_type, event_id) in enumerate(missed, 2)
            ),
        ]
        assert (resumed["last_sequence"], resumed["duplicates"]) == ("3", "0")

        # The channel list shows the channel's status, its event count and its receipts.
        row = await step("channel_row")
        assert (row["status"], row["count"]) == ("connected", "3")
        assert row["receipts"] == {"delivered": "3", "acknowledged": "3", "pending": "0"}

        # History two events a page, in sequence order; Older walks back to the first page.
        history = await step("history")
        events = [(1, "claim_submitted", first["event_id"])]
        events += [(n, event_type, event_id) for n, (event_type, event_id) in enumerate(missed, 2)]
        expected = [
            [
                {"sequence": n, "type": event_type, "claim_id": claim, "event_id": event_id}
                for n, event_type, event_id in chunk
            ]
            for chunk in (events[:2], events[2:])
        ]
        one, two, back = history["pages"]
        assert [one["rows"], two["rows"]] == expected
        assert one["fields"] == {
            "head_sequence": 3,
            "first_available_sequence": 1,
            "unavailable": 0,
            "next_after_sequence": 2,
        }
        assert (one["result"], one["kind"]) == ("Sequences 1–2 of 3 (page 1).", "ok")
        assert (one["older_disabled"], one["newer_disabled"]) == (True, False)
        assert two["fields"] == {**one["fields"], "next_after_sequence": None}
        assert two["result"] == "Sequence 3 of 3 (page 2)."
        assert (two["older_disabled"], two["newer_disabled"]) == (False, True)
        assert back == one

        # The channel's receipts: every event confirmed by the page's socket.
        receipts = await step("channel_receipts")
        assert receipts["fields"] == {
            "channel_id": channel_id,
            "status": "connected",
            "delivered_sequence": 3,
            "acknowledged_sequence": 3,
            "pending_events": 0,
        }

        # An event's receipts: the page says it needs the publisher key before asking...
        no_key = await step("no_key")
        assert no_key["result"] == (
            'Reading receipts needs the publisher key (X-Publisher-Key): type it in "Publish a '
            'test event".'
        )
        assert no_key["rows"] == []
        # ...then, one receipt a page, shows both channels of the replayed event: confirmed
        # on the console's channel, not even delivered on the one without a socket.
        shown = await step("event_receipts")
        assert shown["event_id"] == missed[0][1]
        assert {key: shown["fields"][key] for key in ("event_id", "event_type", "claim_id")} == {
            "event_id": missed[0][1],
            "event_type": "status_changed",
            "claim_id": claim,
        }
        assert shown["fields"]["channels"] == 2
        assert [page["result"] for page in shown["pages"]] == [
            "2 receipt(s) still kept; page 1 of 2.",
            "2 receipt(s) still kept; page 2 of 2.",
        ]
        assert [len(page["rows"]) for page in shown["pages"]] == [1, 1]
        assert shown["next_disabled"] is True

        def receipt(channel: str, kind: str, sequence: int, confirmed: bool) -> dict[str, Any]:
            return {
                "channel_id": channel,
                "subscription_type": kind,
                "user_id": user,
                "sequence": sequence,
                "delivered": confirmed,
                "acknowledged": confirmed,
            }

        by_channel = sorted(
            (row for page in shown["pages"] for row in page["rows"]), key=lambda r: r["channel_id"]
        )
        assert by_channel == sorted(
            [
                receipt(channel_id, "organisation_claims", 2, True),
                receipt(other_id, "user_claims", 1, False),
            ],
            key=lambda r: r["channel_id"],
        )
        # A live row's event id opens that event's receipts (published before the user channel).
        live = await step("live_event_receipts")
        assert live["event_id"] == first["event_id"]
        assert live["page"]["rows"] == [receipt(channel_id, "organisation_claims", 1, True)]

        done = await step("done")
        assert await page.finish(timeout=STEP) == 0, page.report()
    # Chromium logs the refused subscription's 400; nothing else went wrong in the page.
    assert done["problems"] == [
        "console.error: Failed to load resource: the server responded with a status of 400 "
        "(Bad Request)"
    ]
    assert done["foreign"] == [], "the page loaded something from another origin"
    assert len(done["websockets"]) == 2, done  # one per connection: before and after the drop
    for name in ("1-ready", "2-live", "3-dropped", "4-resumed", "5-history", "6-receipts"):
        assert (ARTIFACTS / f"console-{name}.png").read_bytes().startswith(PNG), name


async def test_console_history_says_what_retention_dropped_and_shows_problems(
    own_server: Server, tmp_path: Path
) -> None:
    chromium = chromium_executable()
    own_server.env["HISTORY_MAX_EVENTS"] = "2"
    own_server.start()
    user, claim = unique("usr"), unique("clm")
    channel_id = (await own_server.subscribe("user", user_id=user))["channel_id"]
    event_ids = []
    for _ in range(5):
        result = await own_server.publish(
            event_type="comment_added", claim_id=claim, organisation_id="org_001", user_id=user
        )
        event_ids.append(result["event_id"])
    config = {
        "base_url": own_server.base_url,
        "chromium": chromium,
        "publisher_key": PUBLISHER_KEY,
        "artifacts": str(ARTIFACTS),
        "scenario": "retention",
        "channel_id": channel_id,
    }
    async with run_node(tmp_path, str(SCRIPT), json.dumps(config)) as page:

        async def step(kind: str) -> dict[str, Any]:
            line = await page.expect(kind, timeout=STEP)
            assert "error" not in page.kinds(), page.report()
            return line

        # Only the newest two of five are kept: the first page says three are gone.
        one, two = (await step("retained"))["pages"]
        assert [row["sequence"] for row in one["rows"] + two["rows"]] == [4, 5]
        assert [row["event_id"] for row in one["rows"] + two["rows"]] == event_ids[3:]
        assert one["fields"] == {
            "head_sequence": 5,
            "first_available_sequence": 4,
            "unavailable": 3,
            "next_after_sequence": 4,
        }
        assert one["kind"] == "warning"
        assert one["result"] == (
            "Sequence 4 of 5 (page 1). 3 event(s) after sequence 0 are no longer kept; "
            "history starts at 4."
        )
        # After sequence 4 nothing is missing.
        assert two["fields"] == {**one["fields"], "unavailable": 0, "next_after_sequence": None}
        assert (two["kind"], two["result"]) == ("ok", "Sequence 5 of 5 (page 2).")
        assert (two["older_disabled"], two["newer_disabled"]) == (False, True)

        # The API's problems, as the page shows them: an unknown channel, a closed one.
        missing = await step("missing")
        assert missing["result"].startswith("chan_missing0: 404 Not Found: "), missing
        assert missing["rows"] == []
        async with own_server.client() as http:
            closed = await http.delete(f"/api/v1/realtime-subscriptions/{channel_id}")
            assert closed.status_code == 200, closed.text
        await page.send("closed")
        gone = await step("gone")
        assert gone["result"].startswith(f"{channel_id}: 410 Gone: "), gone
        assert "410 Gone: " in gone["receipts"], gone
        assert gone["rows"] == []

        done = await step("done")
        assert await page.finish(timeout=STEP) == 0, page.report()
    assert set(done["problems"]) == {
        "console.error: Failed to load resource: the server responded with a status of 404 "
        "(Not Found)",
        "console.error: Failed to load resource: the server responded with a status of 410 (Gone)",
    }
    assert done["foreign"] == []


async def test_console_files_are_served_with_the_vendored_client_bundle(
    api: httpx.AsyncClient,
) -> None:
    redirect = await api.get("/console")
    assert (redirect.status_code, redirect.headers["location"]) == (308, "/console/")

    index = await api.get("/console/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    csp = index.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert '<script type="module" src="console.js">' in index.text
    # Every file of the page is served (a new module must be added to ConsoleRoute's FILES).
    pages = [path.name for path in (ROOT / "console").iterdir() if path.is_file()]
    assert {"console.js", "common.js", "history.js", "console.css"} <= set(pages)
    for name in pages:
        response = await api.get("/console/" if name == "index.html" else f"/console/{name}")
        assert response.status_code == 200, name
        assert response.content == (ROOT / "console" / name).read_bytes()
    script = (await api.get("/console/console.js")).text
    assert 'import { io } from "./vendor/socket.io.esm.min.js"' in script

    bundle = await api.get("/console/vendor/socket.io.esm.min.js")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"] == "text/javascript; charset=utf-8"
    # The vendored copy (tests/unit/test_vendored_client.py: the locked npm package's own).
    vendored = ROOT / "console" / "vendor" / "socket.io.esm.min.js"
    assert bundle.content == vendored.read_bytes()
    head = await api.head("/console/vendor/socket.io.esm.min.js")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(bundle.content))


async def test_console_answers_problems_for_unknown_files_and_methods(
    api: httpx.AsyncClient,
) -> None:
    for path in ("/console/nope.js", "/console/..%2Fpyproject.toml", "/console/vendor/"):
        assert_problem(await api.get(path), 404)
    for method in ("POST", "PUT", "DELETE"):
        response = await api.request(method, "/console/")
        assert_problem(response, 405)
        assert response.headers["allow"] == "GET, HEAD"
    # The API behind it is untouched: MethodGuard still answers its own 405s.
    response = await api.delete("/api/v1/realtime-subscriptions")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"
    assert (await api.get("/consoles")).status_code == 404  # not a console path
