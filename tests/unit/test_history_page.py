"""Pages of a channel's history (models.history.read_page) and the `unavailable` arithmetic
it shares with the socket `recovery` message (models.history.Resumption), at the retention
bounds: HISTORY_MAX_EVENTS (count) and HISTORY_TTL (age)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from claims_realtime.models import history, subscriptions
from claims_realtime.models.errors import ChannelClosed, ChannelNotFound
from claims_realtime.models.history import Resumption, Retention
from tests.helpers import age_history
from tests.unit.test_history import KEEP_ALL, channel_with_events, record_one


@pytest.mark.parametrize(
    ("after", "head", "first", "start", "unavailable"),
    [
        (0, 0, 1, 0, 0),  # nothing recorded
        (0, 5, 1, 0, 0),  # everything kept
        (0, 5, 3, 2, 2),  # 1 and 2 are gone
        (1, 5, 3, 2, 1),
        (2, 5, 3, 2, 0),  # right at the bound: nothing missed
        (4, 5, 3, 4, 0),
        (5, 5, 6, 5, 0),  # nothing kept, nothing missed
        (0, 5, 6, 5, 5),  # nothing kept, all missed
        (9, 5, 1, 9, 0),  # after the head (REST only: a socket is refused)
    ],
)
def test_resumption_arithmetic(
    after: int, head: int, first: int, start: int, unavailable: int
) -> None:
    window = Resumption(after, head, first)
    assert (window.start, window.unavailable) == (start, unavailable)
    assert window.recovered == (unavailable == 0)
    # The rule the socket recovery message used before it was shared (AsyncAPI, Recovery).
    assert window.recovered == (after >= first - 1)


@pytest.mark.usefixtures("db")
class TestReadPage:
    async def test_pages_follow_the_cursor_to_the_head(self) -> None:
        channel = await channel_with_events(5)
        seen: list[int] = []
        after: int | None = 0
        pages = 0
        while after is not None:
            page = await history.read_page(channel.id, after, 2, KEEP_ALL)
            seen += [row.sequence for row in page.events]
            after = page.next_after
            pages += 1
        assert seen == [1, 2, 3, 4, 5]
        assert pages == 3

    async def test_a_page_carries_the_events_and_where_history_stands(self) -> None:
        channel = await channel_with_events(3)
        page = await history.read_page(channel.id, 1, 10, KEEP_ALL)
        assert [row.sequence for row in page.events] == [2, 3]
        assert page.events[0].claim_id == "c1"
        assert (page.head_sequence, page.first_available_sequence) == (3, 1)
        assert (page.unavailable, page.next_after) == (0, None)

    async def test_a_full_page_ending_at_the_head_has_no_next(self) -> None:
        channel = await channel_with_events(4)
        page = await history.read_page(channel.id, 2, 2, KEEP_ALL)
        assert [row.sequence for row in page.events] == [3, 4]
        assert page.next_after is None

    @pytest.mark.parametrize(
        ("after", "sequences", "unavailable"),
        [(0, [3, 4, 5], 2), (1, [3, 4, 5], 1), (2, [3, 4, 5], 0), (3, [4, 5], 0)],
    )
    async def test_the_count_bound(
        self, after: int, sequences: list[int], unavailable: int
    ) -> None:
        channel = await channel_with_events(5)
        page = await history.read_page(channel.id, after, 10, Retention(3, 3600))
        assert [row.sequence for row in page.events] == sequences
        assert (page.first_available_sequence, page.unavailable) == (3, unavailable)

    async def test_the_count_bound_exactly_full(self) -> None:
        channel = await channel_with_events(3)
        page = await history.read_page(channel.id, 0, 10, Retention(3, 3600))
        assert [row.sequence for row in page.events] == [1, 2, 3]
        assert (page.first_available_sequence, page.unavailable) == (1, 0)

    @pytest.mark.parametrize(("after", "unavailable"), [(0, 2), (1, 1), (2, 0), (4, 0)])
    async def test_the_age_bound(self, after: int, unavailable: int) -> None:
        channel = await channel_with_events(4)
        old = channel.created_at - timedelta(hours=2)
        await age_history(channel.id, old, up_to=2)
        page = await history.read_page(channel.id, after, 10, KEEP_ALL)
        assert [row.sequence for row in page.events] == [s for s in (3, 4) if s > after]
        assert (page.first_available_sequence, page.unavailable) == (3, unavailable)

    async def test_everything_expired(self) -> None:
        channel = await channel_with_events(2)
        old = channel.created_at - timedelta(hours=2)
        await age_history(channel.id, old)
        page = await history.read_page(channel.id, 0, 10, KEEP_ALL)
        assert page.events == []
        assert (page.head_sequence, page.first_available_sequence) == (2, 3)
        assert (page.unavailable, page.next_after) == (2, None)

    async def test_the_page_stops_at_the_head_it_read(self) -> None:
        channel = await channel_with_events(2)
        await record_one(channel)  # recorded after the head was read: left to the next page
        rows = await history.read_after(channel.id, 0, 10, KEEP_ALL, up_to=2)
        assert [row.sequence for row in rows] == [1, 2]

    async def test_unknown_and_closed_channels(self) -> None:
        with pytest.raises(ChannelNotFound):
            await history.read_page("chan_nosuchchannel", 0, 10, KEEP_ALL)
        channel = await channel_with_events(1)
        await subscriptions.close_channel(channel.id)
        with pytest.raises(ChannelClosed):
            await history.read_page(channel.id, 0, 10, KEEP_ALL)
