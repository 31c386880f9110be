"""Token buckets (busd.kernel.buckets): pure decisions driven by a simulated monotonic clock."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busd.kernel import buckets
from busd.kernel.buckets import RateTable, RateTableStatistics
from busd_protocol.codes import Code
from busd_protocol.rates import Limit, check_key, freeze

pytestmark = pytest.mark.timeout(30)


def table(**limits: tuple[float, float]) -> RateTable:
    return RateTable({k.replace("__", "."): Limit(*v) for k, v in limits.items()})


def offer(
    rates: RateTable, count: int, per_second: float, start: float = 0.0
) -> tuple[int, list[Code]]:
    accepted, refused = 0, []
    for i in range(count):
        reject = rates.admit("t", "p", start + i / per_second)
        if reject is None:
            accepted += 1
        else:
            refused.append(reject.code)
    return accepted, refused


def test_no_limits_admits_everything() -> None:
    rates = RateTable()
    assert all(rates.admit("t", "p", 0.0) is None for _ in range(10_000))
    assert rates.statistics().throttled_total == 0


def test_rate_1000_burst_100_offered_5000_per_second_accepts_rate_times_time_plus_burst() -> None:
    rates = table(publish=(1000, 100))
    accepted, refused = offer(rates, 25_000, 5000.0)
    # 5 s at 1000/s plus the initial burst of 100 (the last message arrives at 4.9998 s).
    assert 5099 - 2 <= accepted <= 5100
    assert set(refused) == {Code.RATE_LIMITED}
    assert len(refused) == 25_000 - accepted


def test_burst_passes_at_once_then_the_bucket_refuses() -> None:
    rates = table(publish=(10, 5))
    assert [rates.admit("t", "p", 0.0) is None for _ in range(6)] == [True] * 5 + [False]


def test_default_burst_is_one_second_of_rate_or_at_least_one() -> None:
    assert Limit.of(500) == Limit(500.0, 500.0)
    assert Limit.of(0.5) == Limit(0.5, 1.0)
    assert Limit.of(0) == Limit(0.0, 1.0)
    assert Limit.of(7, 3) == Limit(7.0, 3.0)


def test_rate_limited_carries_key_and_time_until_next_token() -> None:
    rates = table(publish=(10, 1))
    assert rates.admit("t", "p", 100.0) is None
    reject = rates.admit("t", "p", 100.0)
    assert reject is not None and reject.code is Code.RATE_LIMITED
    assert reject.extra == {"key": "publish", "retry_after_ms": 100}
    later = rates.admit("t", "p", 100.06)
    assert later is not None and later.extra["retry_after_ms"] == 40
    assert rates.admit("t", "p", 100.1) is None


def test_rate_zero_rejects_with_disabled_and_key_at_once() -> None:
    rates = table(publish__release=(0, 1))
    reject = rates.admit("release.shop", "p", 0.0)
    assert reject is not None and reject.code is Code.DISABLED
    assert reject.extra == {"key": "publish.release"}
    assert rates.admit("other", "p", 0.0) is None


def test_disabled_wins_over_rate_limited_whatever_the_bucket_order() -> None:
    rates = table(publish=(1, 1), publisher__bad=(0, 1))
    assert rates.admit("t", "good", 0.0) is None  # empties the global bucket
    reject = rates.admit("t", "bad", 0.0)
    assert reject is not None and reject.code is Code.DISABLED
    assert reject.extra["key"] == "publisher.bad"


def test_longest_matching_prefix_applies() -> None:
    rates = table(publish__release=(1, 1), publish__release__shop=(1, 2), publish__r=(0, 1))
    # release.shop.eu: publish.release.shop (burst 2) applies, not publish.release or publish.r.
    assert rates.admit("release.shop.eu", "p", 0.0) is None
    assert rates.admit("release.shop.eu", "p", 0.0) is None
    third = rates.admit("release.shop.eu", "p", 0.0)
    assert third is not None and third.extra["key"] == "publish.release.shop"
    # "releases" starts with "release": publish.release (burst 1), untouched so far.
    assert rates.admit("releases", "p", 0.0) is None
    second = rates.admit("release", "p", 0.0)
    assert second is not None and second.extra["key"] == "publish.release"
    # "rx" only matches publish.r, which is disabled; "x" matches nothing.
    disabled = rates.admit("rx", "p", 0.0)
    assert disabled is not None and disabled.code is Code.DISABLED
    assert rates.admit("x", "p", 0.0) is None


def test_longest_prefix_among_hundreds_of_keys() -> None:
    limits = {f"publish.svc{i}": Limit(1, 1) for i in range(500)}
    limits["publish.svc1"] = Limit(0, 1)
    rates = RateTable(limits)
    reject = rates.admit("svc123.events", "p", 0.0)  # svc123 beats svc12 and svc1
    assert reject is None
    again = rates.admit("svc123.events", "p", 0.0)
    assert again is not None and again.extra["key"] == "publish.svc123"
    refused = rates.admit("svc1x", "p", 0.0)
    assert refused is not None and refused.extra["key"] == "publish.svc1"


def test_publisher_key_limits_only_that_publisher() -> None:
    rates = table(publisher__deployer=(1, 1))
    assert rates.admit("t", "deployer", 0.0) is None
    reject = rates.admit("t", "deployer", 0.0)
    assert reject is not None and reject.extra["key"] == "publisher.deployer"
    assert all(rates.admit("t", "other", 0.0) is None for _ in range(100))


def test_refusal_by_a_later_bucket_takes_no_token_from_earlier_ones() -> None:
    rates = table(publish=(1, 3), publisher__a=(1, 1))
    assert rates.admit("t", "a", 0.0) is None  # global 3 -> 2, publisher.a 1 -> 0
    for _ in range(5):
        assert rates.admit("t", "a", 0.0) is not None  # refused by publisher.a only
    # The global bucket still holds 2 tokens: two other messages pass, the third does not.
    assert rates.admit("t", "b", 0.0) is None
    assert rates.admit("t", "b", 0.0) is None
    third = rates.admit("t", "b", 0.0)
    assert third is not None and third.extra["key"] == "publish"


def test_retry_after_names_the_slowest_empty_bucket() -> None:
    rates = table(publish=(100, 1), publisher__a=(2, 1))
    assert rates.admit("t", "a", 0.0) is None
    reject = rates.admit("t", "a", 0.0)
    assert reject is not None
    assert reject.extra == {"key": "publisher.a", "retry_after_ms": 500}


def test_configure_keeps_tokens_of_unchanged_keys_and_caps_changed_ones() -> None:
    rates = table(publish=(1, 10), publisher__a=(1, 10))
    for _ in range(8):
        assert rates.admit("t", "a", 0.0) is None
    rates.configure({"publish": Limit(1, 10), "publisher.a": Limit(1, 5)}, 0.0)
    rows = {row.key: row for row in rates.snapshot(0.0)}
    assert rows["publish"].tokens == 2.0  # unchanged: same bucket
    assert rows["publisher.a"].tokens == 2.0  # changed: tokens kept, below the new burst
    rates.configure({"publish": Limit(1, 1)}, 0.0)
    assert {row.key: row.tokens for row in rates.snapshot(0.0)} == {"publish": 1.0}


def test_a_reenabled_key_starts_with_a_full_bucket() -> None:
    rates = table(publish=(0, 1))
    assert rates.admit("t", "p", 0.0) is not None
    rates.configure({"publish": Limit(500, 50)}, 1.0)
    accepted, _ = offer(rates, 60, 1e9, start=1.0)
    assert accepted == 50


def test_clearing_all_limits_admits_everything() -> None:
    rates = table(publish=(0, 1))
    rates.configure({}, 0.0)
    assert rates.admit("t", "p", 0.0) is None
    assert rates.snapshot(0.0) == ()


def test_snapshot_counts_refusals_recent_and_total() -> None:
    rates = table(publish=(1, 1), publisher__x=(0, 1))
    rates.admit("t", "p", 0.0)
    for i in range(4):
        assert rates.admit("t", "p", 0.1 + i * 0.1) is not None
    assert rates.admit("t", "x", 0.5) is not None
    rows = {row.key: row for row in rates.snapshot(0.5)}
    assert (rows["publish"].throttled_recent, rows["publish"].throttled_total) == (4, 4)
    assert (rows["publisher.x"].disabled_recent, rows["publisher.x"].disabled_total) == (1, 1)
    # Minutes later the recent counts have decayed to zero; totals stay.
    rows = {row.key: row for row in rates.snapshot(500.0)}
    assert (rows["publish"].throttled_recent, rows["publish"].throttled_total) == (0, 4)
    assert rates.statistics() == RateTableStatistics(throttled_total=4, disabled_total=1, keys=2)


def test_counters_survive_reconfiguration() -> None:
    rates = table(publish=(1, 1))
    rates.admit("t", "p", 0.0)
    assert rates.admit("t", "p", 0.0) is not None
    rates.configure({"publish": Limit(2, 1)}, 0.0)
    assert rates.snapshot(0.0)[0].throttled_total == 1


@contextmanager
def clocks_that_record_reads() -> Iterator[list[str]]:
    reads: list[str] = []
    names = ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns", "perf_counter_ns")
    saved = {name: getattr(time, name) for name in names}

    def recorder(name: str) -> object:
        def read() -> float:
            reads.append(name)
            return saved[name]()  # type: ignore[no-any-return]

        return read

    for name in names:
        setattr(time, name, recorder(name))
    try:
        yield reads
    finally:
        for name, fn in saved.items():
            setattr(time, name, fn)


def test_decisions_depend_only_on_the_passed_now_never_on_a_clock() -> None:
    assert not {"time", "datetime", "asyncio"} & set(vars(buckets))

    def run(offset: float) -> list[object]:
        rates = table(publish=(100, 10), publish__a=(0, 1), publisher__q=(5, 2))
        out: list[object] = []
        for i in range(400):
            topic = ("a.x", "b", "c")[i % 3]
            reject = rates.admit(topic, ("p", "q")[i % 2], offset + i / 256)
            out.append(None if reject is None else (reject.code, reject.extra))
        return out

    with clocks_that_record_reads() as reads:
        baseline = run(1024.0)
        # A wall-clock jump is invisible: the kernel sees only `now`, and shifting the
        # monotonic origin (by a binary-exact amount, a year here) gives the same decisions.
        assert run(1024.0 + 2**25) == baseline
    assert reads == []
    codes = {item[0] for item in baseline if isinstance(item, tuple)}
    assert codes == {Code.DISABLED, Code.RATE_LIMITED}


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("publish", True),
        ("publish.release", True),
        ("publish.a/b", False),
        ("publish.", False),
        ("publish.x y", False),
        ("publish.x~", False),
        ("publish.x.tmp", False),
        ("publish." + "x" * 247, True),
        ("publish." + "x" * 248, False),
        ("publisher.deployer", True),
        ("publisher.bad name", False),
        ("publisher.", False),
        ("publishers", False),
        ("other", False),
        ("", False),
        ("publish.ünï", True),
    ],
)
def test_check_key_accepts_only_the_three_key_forms(key: str, ok: bool) -> None:
    assert (check_key(key) is None) is ok


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(-1, 1), (math.nan, 1), (math.inf, 1), (1, 0.5), (1, math.nan), (2e9, 1), (1, 0)],
)
def test_bad_limit_values_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        Limit.of(rate, burst)
    with pytest.raises(ValueError, match="publish"):
        freeze({"publish": Limit(rate, burst)})


def test_bad_key_is_refused_by_configure() -> None:
    with pytest.raises(ValueError, match="other"):
        RateTable().configure({"other": Limit(1, 1)}, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 5000),
    burst=st.floats(1, 500),
    gaps=st.lists(st.floats(0, 0.05), min_size=1, max_size=300),
)
def test_accepted_never_exceeds_burst_plus_rate_times_elapsed(
    rate: float, burst: float, gaps: list[float]
) -> None:
    rates = RateTable({"publish": Limit(rate, burst)})
    now, accepted = 0.0, 0
    for gap in gaps:
        now += gap
        accepted += rates.admit("t", "p", now) is None
    assert accepted <= burst + rate * now + 1e-6
