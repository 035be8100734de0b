"""A channel's fallback webhook in the domain (models.fallbacks): set, replace, read, remove,
and created with its channel; what it owes; what it refuses."""

from __future__ import annotations

import pytest

from claims_realtime.models import fallbacks, ingest, subscriptions
from claims_realtime.models.channel import Channel, SubscriptionType
from claims_realtime.models.clock import utcnow
from claims_realtime.models.errors import ChannelClosed, FallbackNotFound, InvalidInput, Unavailable
from claims_realtime.models.fallback import WebhookFailure, WebhookFallback, WebhookKeyCheck
from claims_realtime.models.fallbacks import FallbackSpec, WebhookPolicy
from claims_realtime.models.webhook_secrets import SecretBox, new_sealing_key

pytestmark = pytest.mark.usefixtures("db")

URL = "https://hooks.test/claims"
POLICY = WebhookPolicy(SecretBox([new_sealing_key()]), allowed_hosts=("hooks.test",))


async def user_channel(user_id: str = "usr_f", **kwargs: object) -> str:
    created = await subscriptions.create_channel(
        SubscriptionType.USER_CLAIMS, user_id=user_id, **kwargs
    )
    return created.channel.id


async def publish(event_type: str, user_id: str = "usr_f") -> None:
    event = {
        "event_type": event_type,
        "claim_id": "clm_1",
        "organisation_id": "org_f",
        "user_id": user_id,
        "data": {},
    }
    await ingest.record_events([event], max_data_bytes=1024, batch=False)


async def test_the_cursor_starts_at_the_head_so_earlier_events_never_fire() -> None:
    channel_id = await user_channel()
    for _ in range(3):
        await publish("status_changed")

    made = await fallbacks.set_fallback(channel_id, FallbackSpec(URL, 60), POLICY)

    assert made.fallback.cursor == 3 and made.pending == 0
    assert made.secret.startswith("whsec_")
    stored = await WebhookFallback.get(channel_id=channel_id)
    assert stored.secret != made.secret and POLICY.box.open(stored.secret) == made.secret
    assert stored.event_types == list(subscriptions.canonical_event_types(None))
    await publish("status_changed")
    assert (await fallbacks.fallback_state(channel_id)).pending == 1


async def test_replacing_keeps_the_cursor_and_rotates_the_secret() -> None:
    channel_id = await user_channel()
    first = await fallbacks.set_fallback(channel_id, FallbackSpec(URL, 60), POLICY)
    await publish("claim_approved")
    await publish("comment_added")

    second = await fallbacks.set_fallback(
        channel_id, FallbackSpec(URL + "/v2", 600, ["comment_added"]), POLICY
    )

    assert second.secret != first.secret
    assert second.fallback.cursor == 0  # what was owed is still owed, to the new URL
    assert second.pending == 1  # of its types now: comment_added only
    state = await fallbacks.fallback_state(channel_id)
    assert state.fallback.url == URL + "/v2" and state.fallback.after_seconds == 600
    assert state.fallback.created_at == first.fallback.created_at
    assert POLICY.box.open(state.fallback.secret) == second.secret


async def test_owed_counts_its_types_after_what_the_subscriber_confirmed() -> None:
    channel_id = await user_channel()
    await fallbacks.set_fallback(
        channel_id, FallbackSpec(URL, 60, ["claim_approved", "claim_rejected"]), POLICY
    )
    for event_type in ("claim_approved", "comment_added", "claim_rejected", "claim_approved"):
        await publish(event_type)
    assert (await fallbacks.fallback_state(channel_id)).pending == 3

    await Channel.filter(id=channel_id).update(confirmed_sequence=3)
    assert (await fallbacks.fallback_state(channel_id)).pending == 1
    await Channel.filter(id=channel_id).update(confirmed_sequence=4)
    assert (await fallbacks.fallback_state(channel_id)).pending == 0


async def test_event_types_must_be_the_channels_own() -> None:
    channel_id = await user_channel(event_types=["status_changed", "comment_added"])
    with pytest.raises(InvalidInput) as caught:
        await fallbacks.set_fallback(
            channel_id, FallbackSpec(URL, 60, ["comment_added", "claim_approved"]), POLICY
        )
    assert caught.value.field == "fallback.event_types"
    assert "claim_approved" in caught.value.detail

    made = await fallbacks.set_fallback(channel_id, FallbackSpec(URL, 60), POLICY)
    assert made.fallback.event_types == ["status_changed", "comment_added"]  # the channel's


@pytest.mark.parametrize("after_seconds", [9, 604801, 10**18])
async def test_after_seconds_out_of_range_is_refused(after_seconds: int) -> None:
    channel_id = await user_channel()
    with pytest.raises(InvalidInput) as caught:
        await fallbacks.set_fallback(channel_id, FallbackSpec(URL, after_seconds), POLICY)
    assert caught.value.field == "fallback.after_seconds"


async def test_remove_then_read_is_not_found() -> None:
    channel_id = await user_channel()
    with pytest.raises(FallbackNotFound):
        await fallbacks.fallback_state(channel_id)
    await fallbacks.set_fallback(channel_id, FallbackSpec(URL, 60), POLICY)
    await WebhookFailure.create(
        channel_id=channel_id, sequence=1, event_id="evt_x", attempts=1, failed_at=utcnow()
    )
    await fallbacks.remove_fallback(channel_id)
    with pytest.raises(FallbackNotFound):
        await fallbacks.fallback_state(channel_id)
    with pytest.raises(FallbackNotFound):
        await fallbacks.remove_fallback(channel_id)
    await fallbacks.set_fallback(channel_id, FallbackSpec(URL, 60), POLICY)
    assert (await fallbacks.fallback_state(channel_id)).recent_failures == [], "afresh"


async def test_a_closed_channel_is_gone() -> None:
    channel_id = await user_channel()
    await fallbacks.set_fallback(channel_id, FallbackSpec(URL, 60), POLICY)
    await subscriptions.close_channel(channel_id)
    for call in (
        fallbacks.set_fallback(channel_id, FallbackSpec(URL, 60), POLICY),
        fallbacks.fallback_state(channel_id),
        fallbacks.remove_fallback(channel_id),
    ):
        with pytest.raises(ChannelClosed):
            await call


async def test_created_with_its_channel_in_one_transaction() -> None:
    made = await fallbacks.create_channel_with_fallback(
        SubscriptionType.ORGANISATION_CLAIMS,
        FallbackSpec(URL, 60, ["claim_rejected"]),
        POLICY,
        user_id="usr_c",
        organisation_id="org_c",
        event_types=["claim_approved", "claim_rejected"],
    )
    channel_id = made.created.channel.id
    state = await fallbacks.fallback_state(channel_id)
    assert state.fallback.event_types == ["claim_rejected"] and state.fallback.cursor == 0
    assert POLICY.box.open(state.fallback.secret) == made.fallback.secret


async def test_a_refused_fallback_creates_no_channel() -> None:
    for spec in (
        FallbackSpec("https://127.0.0.1/x", 60),
        FallbackSpec(URL, 60, ["comment_added"]),  # not among the channel's types
    ):
        with pytest.raises(InvalidInput):
            await fallbacks.create_channel_with_fallback(
                SubscriptionType.USER_CLAIMS,
                spec,
                POLICY,
                user_id="usr_none",
                event_types=["claim_approved"],
            )
    assert await Channel.filter(user_id="usr_none").count() == 0


async def test_processes_agree_on_keys_only_if_theirs_open_the_first_ones_check() -> None:
    first, other = new_sealing_key(), new_sealing_key()
    try:
        assert await fallbacks.keys_agree(SecretBox([first])), "the first to ask sets the check"
        assert await fallbacks.keys_agree(SecretBox([first]))
        assert not await fallbacks.keys_agree(SecretBox([other]))
        assert await fallbacks.keys_agree(SecretBox([other, first])), "rotated: the old key opens"
    finally:  # on PostgreSQL the database outlives the test: servers started later check it
        await WebhookKeyCheck.all().delete()


async def test_a_process_whose_keys_differ_sets_no_fallback() -> None:
    channel = (
        await subscriptions.create_channel(SubscriptionType.USER_CLAIMS, user_id="u")
    ).channel
    stray = WebhookPolicy(POLICY.box, POLICY.allowed_hosts, keys_agree=False)
    with pytest.raises(Unavailable) as refused:
        await fallbacks.set_fallback(channel.id, FallbackSpec("https://hooks.test/x", 60), stray)
    assert refused.value.checks == {"webhook_secret_key": "mismatch"}
    assert not await WebhookFallback.filter(channel_id=channel.id).exists()


async def test_resealing_lets_the_old_key_go_and_leaves_unreadable_secrets_alone() -> None:
    old, new = new_sealing_key(), new_sealing_key()
    before = WebhookPolicy(SecretBox([old]), allowed_hosts=("hooks.test",))
    assert await fallbacks.keys_agree(before.box)
    made = [
        await fallbacks.set_fallback(await user_channel(f"usr_{i}"), FallbackSpec(URL, 60), before)
        for i in range(3)
    ]
    stranger = await user_channel("usr_x")
    await fallbacks.set_fallback(stranger, FallbackSpec(URL, 60), before)
    foreign = SecretBox([new_sealing_key()]).seal("whsec_foreign")
    await WebhookFallback.filter(channel_id=stranger).update(secret=foreign)

    done = await fallbacks.reseal_secrets(SecretBox([new, old]), batch=2)

    assert (done.resealed, done.unreadable) == (3, 1)
    only_new = SecretBox([new])
    for found in made:
        stored = await WebhookFallback.get(channel_id=found.fallback.channel_id)
        assert only_new.open(stored.secret) == found.secret
    assert (await WebhookFallback.get(channel_id=stranger)).secret == foreign
    assert await fallbacks.keys_agree(only_new)
    assert not await fallbacks.keys_agree(SecretBox([old]))
