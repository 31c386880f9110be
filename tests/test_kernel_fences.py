"""busd.kernel.fences: a retryable refusal holds back a connection's later messages of its
topic until the refused message itself is accepted."""

from __future__ import annotations

import pytest

from busd.kernel.fences import GRACE, Fences
from busd_protocol.codes import Code, Reject

pytestmark = pytest.mark.timeout(10)
LIMITED = Reject(Code.RATE_LIMITED, "slow down", {"key": "publish", "retry_after_ms": 100})


def test_later_messages_of_a_fenced_topic_get_the_same_refusal() -> None:
    f = Fences()
    f.refused_with(b"c1", b"t", b"env-1", LIMITED, 0.0)
    assert f.check(b"c1", b"t", b"env-2", 0.01) is LIMITED
    assert f.check(b"c1", b"t", b"env-1", 0.01) is None  # the refused one itself: judged
    assert f.check(b"c2", b"t", b"env-2", 0.01) is None  # another connection: not fenced
    assert f.check(b"c1", b"u", b"env-2", 0.01) is None  # another topic: not fenced
    f.accepted(b"c1", b"t")
    assert len(f) == 0 and f.lifted == 1 and f.refused == 1


def test_a_fence_whose_message_never_returns_expires() -> None:
    f = Fences()
    f.refused_with(b"c1", b"t", b"env-1", LIMITED, 0.0)
    assert f.check(b"c1", b"t", b"env-2", 0.1 + GRACE - 0.01) is LIMITED
    assert f.check(b"c1", b"t", b"env-2", 0.1 + GRACE) is None
    assert len(f) == 0


def test_final_and_disabled_refusals_set_no_fence() -> None:
    f = Fences()
    f.refused_with(b"c", b"t", b"e", Reject(Code.INVALID, "bad"), 0.0)
    f.refused_with(b"c", b"t", b"e", Reject(Code.DISABLED, "off", {"key": "publish"}), 0.0)
    assert len(f) == 0


def test_the_table_is_capped() -> None:
    f = Fences(cap=2)
    for i in range(3):
        f.refused_with(b"c", b"t%d" % i, b"e", LIMITED, 0.0)
    assert len(f) == 2 and f.full == 1
    f.refused_with(b"c", b"t9", b"e", LIMITED, 10.0)  # the expired ones make room
    assert len(f) == 1 and f.set_total == 3


def test_a_sweep_drops_fences_no_message_will_check_again() -> None:
    f = Fences()
    f.refused_with(b"gone", b"t", b"e", LIMITED, 0.0)
    f.sweep(0.05)
    assert len(f) == 1
    f.sweep(0.1 + GRACE + 1.0)
    assert len(f) == 0


def test_sequences_of_100_000_topics_stay_within_two_generations_of_the_cap() -> None:
    """busd.kernel.sequences: memory is bounded whatever the number of topics."""
    from busd.kernel.sequences import TopicSequences

    s = TopicSequences(7, 0.0, idle=300.0, cap=1000)
    for i in range(100_000):
        topic = b"t%d" % i
        n = s.current.get(topic) or s.revive(topic)
        s.current[topic] = n + 1
        assert len(s.current) + len(s.previous) <= 2000
    st = s.statistics()
    assert st.topics <= 2000 and st.expired >= 98_000 and st.turnovers >= 98
    s.tick(301.0)
    s.tick(602.0)
    assert s.statistics().topics == 0  # idle topics expire
