"""DedupWindow: the pool subscriber's memory of recent message ids, bounded in size and age.

Driven directly with passed-in times (it reads no clock).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busd_client.dedup import DedupWindow

pytestmark = pytest.mark.timeout(30)


def test_first_copy_is_new_and_a_second_is_a_duplicate() -> None:
    w = DedupWindow(size=10, ttl=5.0)
    assert w.first("a", 0.0) is True
    assert w.first("a", 1.0) is False
    assert w.first("b", 1.0) is True
    assert w.first("a", 2.0) is False
    assert w.duplicates == 2
    assert len(w) == 2


def test_a_copy_at_exactly_ttl_is_a_duplicate_and_after_ttl_is_new_again() -> None:
    w = DedupWindow(size=10, ttl=5.0)
    assert w.first("a", 100.0)
    assert not w.first("a", 105.0)  # the window includes its edge
    assert w.first("a", 105.001)
    assert w.duplicates == 1
    # Seen anew at 105.001: the ttl counts from then.
    assert not w.first("a", 110.0)
    assert w.first("a", 110.01)


def test_ids_older_than_ttl_leave_the_window_when_a_new_id_arrives() -> None:
    w = DedupWindow(size=10, ttl=1.0)
    for k in range(5):
        w.first(f"old{k}", 0.0)
    assert len(w) == 5
    w.first("new", 2.0)
    assert len(w) == 1
    assert w.evicted_early == 0  # they expired; the size bound pushed nothing out


def test_size_bound_evicts_the_oldest_id_and_counts_it_evicted_early() -> None:
    w = DedupWindow(size=3, ttl=60.0)
    for i, k in enumerate("abcd"):
        assert w.first(k, float(i))
    assert len(w) == 3
    assert w.evicted_early == 1
    assert not w.first("b", 4.0)  # still held
    assert w.first("a", 4.0)  # pushed out by d, so a copy of a is delivered again
    assert w.evicted_early == 2  # and a's return pushed b out
    assert w.first("b", 4.0)


def test_an_expired_id_seen_again_moves_to_the_young_end() -> None:
    w = DedupWindow(size=2, ttl=1.0)
    w.first("a", 0.0)
    w.first("b", 0.5)
    assert w.first("a", 1.2)  # expired, new again; b is now the oldest
    w.first("c", 1.3)  # over size: b goes, not a
    assert not w.first("a", 1.4)
    assert w.first("b", 1.4)


def test_statistics_reports_ids_bounds_duplicates_and_evictions() -> None:
    w = DedupWindow(size=2, ttl=30)
    for k in ("x", "y", "x", "z"):
        w.first(k, 1.0)
    stats = w.statistics()
    assert stats == {"ids": 2, "size": 2, "ttl": 30.0, "duplicates": 1, "evicted_early": 1}
    assert isinstance(stats["ttl"], float)


@pytest.mark.parametrize(
    ("size", "ttl"),
    [
        (0, 1.0),
        (-1, 1.0),
        (1, 0.0),
        (1, -5.0),
        (1, math.nan),
    ],
)
def test_bad_size_or_ttl_raises_value_error(size: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="dedup"):
        DedupWindow(size=size, ttl=ttl)


def test_defaults_are_200000_ids_and_60_seconds() -> None:
    w = DedupWindow()
    assert (w.size, w.ttl) == (200_000, 60.0)


def test_memory_stays_bounded_under_a_long_stream_of_unique_ids() -> None:
    w = DedupWindow(size=1000, ttl=3600.0)
    for k in range(20_000):
        assert w.first(f"id{k}", k * 0.001)
        assert len(w) <= 1000
    assert w.evicted_early == 19_000


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 8),
    ttl=st.sampled_from([0.5, 1.0, 3.0]),
    events=st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from([0.0, 0.25, 0.5, 1.5])), max_size=120
    ),
)
def test_window_matches_a_reference_model_and_never_exceeds_its_size(
    size: int, ttl: float, events: list[tuple[int, float]]
) -> None:
    """Times are exact binary fractions, so the ttl edge is compared exactly.

    Reference: an id is a duplicate iff it was delivered within ttl and fewer than
    ``size`` other ids were delivered since (each delivery makes one id young)."""
    w = DedupWindow(size=size, ttl=ttl)
    delivered: list[tuple[str, float]] = []  # (id, time) of every delivery, oldest first
    now = 0.0
    dups = 0
    for key, step in events:
        now += step
        mid = f"m{key}"
        live = [(i, t) for i, t in delivered if now - t <= ttl][-size:]
        expect_dup = any(i == mid for i, _ in live)
        got = w.first(mid, now)
        assert got is (not expect_dup), (mid, now, live)
        if got:
            delivered.append((mid, now))
        else:
            dups += 1
        assert len(w) <= size
    assert w.duplicates == dups
