"""Routes (models.routing) held by routing key: what a transaction still has to read."""

from __future__ import annotations

from claims_realtime.models.clock import utcnow
from claims_realtime.models.event import NewEvent
from claims_realtime.models.routing import Routes
from claims_realtime.models.submission import new_event


def event(organisation_id: str, user_id: str) -> NewEvent:
    submitted = {
        "event_type": "status_changed",
        "claim_id": "clm_1",
        "organisation_id": organisation_id,
        "user_id": user_id,
    }
    return new_event(submitted, "", now=utcnow(), max_data_bytes=1024, event_id="evt_1")


def test_only_keys_not_held_are_missing() -> None:
    routes = Routes()
    assert routes.missing([event("org_1", "usr_1"), event("org_1", "usr_2")]) == (
        ["org_1"],
        ["usr_1", "usr_2"],
    )
    routes.learn(["org_1"], ["usr_1", "usr_2"], [], [])
    assert routes.missing([event("org_1", "usr_2")]) is None
    assert routes.missing([event("org_1", "usr_3")]) == ([], ["usr_3"])
    assert routes.feeds(event("org_1", "usr_2")) == []


def test_a_full_routes_starts_again_and_asks_for_every_key() -> None:
    routes = Routes(max_keys=2)
    routes.learn(["org_1"], ["usr_1"], [], [])
    assert routes.missing([event("org_1", "usr_2")]) == (["org_1"], ["usr_2"])


def test_another_connections_commit_empties_it() -> None:
    routes = Routes()
    routes.still_valid(7)
    routes.learn(["org_1"], ["usr_1"], [], [])
    routes.still_valid(7)
    assert routes.missing([event("org_1", "usr_1")]) is None
    routes.still_valid(8)
    assert routes.missing([event("org_1", "usr_1")]) == (["org_1"], ["usr_1"])
