"""What errors and logs give away: no stack traces or internals in responses, a request id
on every response and its log records, JSON log lines on request, and no secrets in logs."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest

from claims_realtime.models import subscriptions
from claims_realtime.realtime.client import ChannelClient, ChannelClosed, Recovery
from tests.helpers import PUBLISHER_KEY, assert_problem, unique
from tests.server import Server

SUBS = "/api/v1/realtime-subscriptions"
INTERNAL = "db row 4711 in /srv/claims/internal.py: token_hash=ab12cd"
EVENT = {"event_type": "claim_submitted", "organisation_id": "org_hygiene"}


async def test_an_unexpected_error_is_a_generic_500(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(INTERNAL)

    monkeypatch.setattr(subscriptions, "list_channels", broken)

    with caplog.at_level(logging.ERROR):
        response = await api.get(SUBS, headers={"X-Request-ID": "req-hygiene-1"})

    body = assert_problem(response, 500)
    assert body["detail"] == "The server failed to handle the request."
    for leak in ("Traceback", "RuntimeError", INTERNAL, "internal.py", 'File "'):
        assert leak not in response.text, response.text
    assert response.headers["x-request-id"] == "req-hygiene-1"
    # The details are in the log, tagged with the request's id.
    logged = [r for r in caplog.records if r.exc_info and INTERNAL in str(r.exc_info[1])]
    assert len(logged) == 1, caplog.records
    assert getattr(logged[0], "request_id", None) == "req-hygiene-1"


async def test_every_response_carries_a_request_id(api: httpx.AsyncClient) -> None:
    generated = [(await api.get(SUBS)).headers["x-request-id"] for _ in range(2)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in generated), generated
    assert generated[0] != generated[1]

    echoed = await api.get(SUBS, headers={"X-Request-ID": "client-abc.123:x"})
    assert echoed.headers["x-request-id"] == "client-abc.123:x"

    problem = await api.get(f"{SUBS}/not-a-channel", headers={"X-Request-ID": "req-400"})
    assert_problem(problem, 400)
    assert problem.headers["x-request-id"] == "req-400"


@pytest.mark.parametrize(
    "insane", ["has space", "x" * 129, "line\\nbreak", 'quote"d', "ünïcode"], ids=str
)
async def test_an_insane_incoming_request_id_is_replaced(
    api: httpx.AsyncClient, insane: str
) -> None:
    response = await api.get(SUBS, headers={"X-Request-ID": insane.encode("utf-8")})

    assert response.headers["x-request-id"] != insane
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])


@pytest.mark.integration
async def test_logs_are_json_lines_without_secrets(own_server: Server) -> None:
    # DEBUG: the most a log will ever say (SQL included), in JSON.
    own_server.env.update({"LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json"})
    own_server.start()
    user = unique("usr")
    wrong_token = "wrong-channel-token-" + unique("t")
    wrong_key = "wrong-publisher-key-" + unique("k")

    channel = await own_server.subscribe("user", user_id=user)
    token = channel["channel_token"]
    async with ChannelClient(channel["websocket_url"], token) as client:
        async with own_server.client() as http:
            published = await http.post(
                "/api/v1/claim-events",
                json={**EVENT, "claim_id": "clm_1", "user_id": user},
                headers={"X-Publisher-Key": PUBLISHER_KEY, "X-Request-ID": "req-publish-1"},
            )
            assert published.status_code == 202, published.text
            refused = await http.post(
                "/api/v1/claim-events",
                json={**EVENT, "claim_id": "clm_2", "user_id": user},
                headers={"X-Publisher-Key": wrong_key},
            )
            assert refused.status_code == 401
        message = await client.next(10)
        while isinstance(message, Recovery):
            message = await client.next(10)
        assert message["claim_id"] == "clm_1"
    with pytest.raises(ChannelClosed):
        await ChannelClient(channel["websocket_url"], wrong_token).connect()
    own_server.stop()

    text = own_server.log_path.read_text()
    for secret in (token, PUBLISHER_KEY, wrong_token, wrong_key):
        assert secret not in text, f"a secret reached the log: {secret[:6]}…"
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert entries, "the server logged nothing"
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    # uvicorn's access line of the publish carries the request id we sent.
    tagged = [e for e in entries if e.get("request_id") == "req-publish-1"]
    assert any("/api/v1/claim-events" in e["message"] for e in tagged), tagged
