"""busd_client.gaps: what a subscriber concludes from the delivery stamps it reads."""

from __future__ import annotations

import pytest

from busd_client.gaps import Gap, GapTracker
from busd_protocol.stamps import encode_stamp

pytestmark = pytest.mark.timeout(10)
A, B, A2 = 0xA, 0xB, 0xA2


def feed(t: GapTracker, *items: tuple[bytes, int, int]) -> None:
    for topic, epoch, seq in items:
        assert t.observe(topic, encode_stamp(epoch, seq))


def test_the_first_message_sets_the_baseline_and_a_jump_is_a_gap() -> None:
    reports: list[Gap] = []
    t = GapTracker(on_gap=reports.append)
    feed(t, (b"t", A, 40), (b"t", A, 41), (b"t", A, 45), (b"u", A, 7))
    assert reports == [Gap("gap", "t", A, 42, 45)]
    assert (t.gaps, t.missed, reports[0].missing) == (1, 3, 3)


def test_a_new_epoch_is_one_restart_and_starts_new_baselines() -> None:
    reports: list[Gap] = []
    t = GapTracker(on_gap=reports.append)
    feed(t, (b"t", A, 5), (b"u", A, 9), (b"t", A2, 3), (b"u", A2, 1), (b"u", A2, 2))
    assert reports == [Gap("epoch", "t", A2, 0, 3, previous=A)]
    assert (t.epoch_changes, t.gaps) == (1, 0)


def test_a_topic_back_at_one_in_the_same_epoch_is_a_reset_not_a_gap() -> None:
    t = GapTracker()
    feed(t, (b"t", A, 5), (b"t", A, 1), (b"t", A, 2))
    assert (t.gaps, t.resets) == (0, 1)


def test_in_a_pool_each_broker_is_its_own_stream() -> None:
    """Interleaved brokers make no gap; a copy from B does not hide A's loss; the first
    sight of each broker is no restart, a replaced one is."""
    reports: list[Gap] = []
    t = GapTracker(brokers=2, on_gap=reports.append)
    feed(t, (b"t", A, 1), (b"t", B, 10), (b"t", A, 2), (b"t", B, 11), (b"t", A, 4))
    assert reports == [Gap("gap", "t", A, 3, 4)]
    feed(t, (b"t", A, 5), (b"t", A2, 1))  # B silent longest: A2 replaced it
    assert reports[-1] == Gap("epoch", "t", A2, 0, 1, previous=B)


def test_a_frame_that_is_not_a_stamp_is_refused_and_none_is_counted() -> None:
    t = GapTracker()
    assert not t.observe(b"t", b"extra")
    assert t.observe(b"t", None) and t.unstamped == 1
