"""The client-side rate limiter: rate file grammar, token buckets, re-reading, waiting."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from busd_client import Disabled, RateLimited
from busd_client.limiter import RateLimiter
from busd_protocol.rates import Limit, TokenBucket, parse_rate

GRAMMAR = re.compile(rb"^[0-9]+(\.[0-9]+)?([ \t]+[0-9]+(\.[0-9]+)?)?[ \t]*\n?$")


def grammar_accepts(content: bytes) -> bool:
    """The documented regex over the whole input (``match`` alone would let ``$`` stop
    before a final newline)."""
    return GRAMMAR.fullmatch(content) is not None


class FakeClock:
    """Monotonic time that moves only when the limiter sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("content", "limit"),
    [
        (b"10", Limit(10, 10)),
        (b"10\n", Limit(10, 10)),
        (b"2.5 7", Limit(2.5, 7)),
        (b"0.5", Limit(0.5, 1)),
        (b"0", Limit(0, 1)),
        (b"0.0\n", Limit(0, 1)),
        (b"100\t200 \t\n", Limit(100, 200)),
        (b"007", Limit(7, 7)),
        (b"1000000000 1000000000", Limit(1e9, 1e9)),
    ],
)
def test_valid_rate_files_parse(content: bytes, limit: Limit) -> None:
    assert parse_rate(content) == limit


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b" 10",
        b"+5",
        b"-5",
        b"1e3",
        b"nan",
        b"inf",
        b"1_000",
        b"1.",
        b".5",
        b"1..2",
        b"10\n\n",
        b"10\r\n",
        b"10 20 30",
        b"10,5",
        b"\xd9\xa3",
        "５".encode(),
        b"10\x00",
        b"0x10",
        b"10 0.5",  # burst below 1: busd refuses too
        b"1000000001",
        b"5 1000000001",  # over busd's MAX_RATE
    ],
)
def test_invalid_rate_files_are_refused(content: bytes) -> None:
    assert parse_rate(content) is None


def test_trailing_blank_before_newline_is_allowed() -> None:
    assert parse_rate(b"10 \n") == Limit(10, 10)


@given(
    st.binary(max_size=24) | st.text(alphabet="0123456789. \t\n-+e", max_size=16).map(str.encode)
)
def test_parser_accepts_exactly_the_documented_grammar(content: bytes) -> None:
    limit = parse_rate(content)
    if limit is not None:
        assert grammar_accepts(content)
    elif grammar_accepts(content):  # refused only for range: rate <= 1e9, 1 <= burst <= 1e9
        parts = [float(p) for p in content.split()]
        assert parts[0] > 1e9 or (len(parts) == 2 and not 1 <= parts[1] <= 1e9)


def test_bucket_starts_full_and_refills_at_rate() -> None:
    bucket = TokenBucket(Limit(2, 3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0  # refill is capped at burst: 3 tokens, one taken
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) > 0


def test_missing_file_means_unlimited(tmp_path: Path) -> None:
    limiter = RateLimiter(tmp_path)
    assert limiter.limit_for("publish") is None
    assert all(limiter.try_acquire("publish") for _ in range(10_000))


def test_rate_file_limits_and_waits_for_tokens(tmp_path: Path) -> None:
    (tmp_path / "publish").write_text("10 2\n")
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(12):
        with limiter.limit("publish"):
            pass
    # 2 from the burst, then 10 more at 10/s.
    assert clock.now - start == pytest.approx(1.0)


def test_zero_rate_raises_disabled_at_once_without_timeout(tmp_path: Path) -> None:
    (tmp_path / "publish").write_text("0")
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, clock=clock, sleep=clock.sleep)
    with pytest.raises(Disabled) as info:
        limiter.acquire("publish")
    assert info.value.key == "publish"
    assert clock.slept == []


def test_disabled_key_waits_for_reenable_within_timeout(tmp_path: Path) -> None:
    path = tmp_path / "publish"
    path.write_text("0")
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= 1002.0:
            path.write_text("5")  # an operator re-enables after two seconds

    limiter = RateLimiter(tmp_path, clock=clock, sleep=sleep)
    limiter.acquire("publish", timeout=10)
    assert 1002.0 <= clock.now <= 1003.0 + 1e-9


def test_disabled_key_raises_disabled_after_timeout(tmp_path: Path) -> None:
    (tmp_path / "publish").write_text("0")
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, clock=clock, sleep=clock.sleep)
    with pytest.raises(Disabled):
        limiter.acquire("publish", timeout=2.5)
    assert clock.now == pytest.approx(1002.5)


def test_rate_limited_raised_when_no_token_can_come_in_time(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("1")
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, clock=clock, sleep=clock.sleep)
    limiter.acquire("k", timeout=0)
    with pytest.raises(RateLimited) as info:
        limiter.acquire("k", timeout=0.5)
    assert (info.value.key, info.value.retry_after_ms) == ("k", 1000)
    assert clock.slept == []


def test_files_are_reread_at_most_once_per_second(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("5")
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, clock=clock, sleep=clock.sleep)
    assert limiter.limit_for("k") == Limit(5, 5)
    path.write_text("7")
    clock.now += 0.999
    assert limiter.limit_for("k") == Limit(5, 5)
    clock.now += 0.001
    assert limiter.limit_for("k") == Limit(7, 7)


@pytest.mark.parametrize("bad", [b"", b"1e3", b"7 7 7", b"nan"])
def test_bad_or_half_written_file_keeps_last_good_value(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "k"
    path.write_text("5")
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, clock=clock, sleep=clock.sleep)
    assert limiter.limit_for("k") == Limit(5, 5)
    path.write_bytes(bad)
    clock.now += 1
    assert limiter.limit_for("k") == Limit(5, 5)


def test_unreadable_file_keeps_last_good_value(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("5")
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, clock=clock, sleep=clock.sleep)
    assert limiter.limit_for("k") == Limit(5, 5)
    path.unlink()
    path.mkdir()  # reading a directory fails with an OSError other than "not found"
    clock.now += 1
    assert limiter.limit_for("k") == Limit(5, 5)


def test_removed_file_lifts_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("0")
    clock = FakeClock()
    limiter = RateLimiter(tmp_path, clock=clock, sleep=clock.sleep)
    assert not limiter.try_acquire("k")
    path.unlink()
    clock.now += 1
    assert limiter.try_acquire("k")


@pytest.mark.parametrize("key", ["", "a/b", "../etc", ".hidden", "a b", "x\x00"])
def test_keys_that_are_not_plain_file_names_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="rate key"):
        RateLimiter(tmp_path).limit_for(key)


@pytest.mark.timeout(10)
async def test_async_limit_paces_with_real_time(tmp_path: Path) -> None:
    (tmp_path / "publish").write_text("20 1")
    limiter = RateLimiter(tmp_path)
    start = time.monotonic()
    for _ in range(5):
        async with limiter.limit_async("publish"):
            pass
    assert 0.19 <= time.monotonic() - start < 2.0  # 1 from the burst, 4 more at 20/s


@pytest.mark.timeout(10)
async def test_async_disabled_raises_after_timeout(tmp_path: Path) -> None:
    (tmp_path / "publish").write_text("0")
    limiter = RateLimiter(tmp_path)
    start = time.monotonic()
    with pytest.raises(Disabled):
        await limiter.acquire_async("publish", timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 2.0
    await asyncio.sleep(0)


@given(st.binary(max_size=24) | st.text(alphabet="0123456789. \t\n", max_size=20).map(str.encode))
def test_client_and_busd_parsers_agree_on_every_input(content: bytes) -> None:
    from busd.control.rates_dir import RateFileError
    from busd.control.rates_dir import parse_rate as busd_parse_rate

    ours = parse_rate(content)
    try:
        theirs = busd_parse_rate(content)
    except RateFileError:
        assert ours is None
    else:
        assert ours is not None and (ours.rate, ours.burst) == (theirs.rate, theirs.burst)


def test_a_missing_rates_directory_is_logged_loudly_as_everything_unlimited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in the path would otherwise mean unlimited in silence. Logged when the limiter
    is made, not again while it stays missing, and again when a directory that was there
    goes missing."""
    missing = tmp_path / "etc-rates"
    clock = FakeClock()
    with caplog.at_level("WARNING", logger="busd_client.limiter"):
        limiter = RateLimiter(missing, clock=clock, sleep=clock.sleep)
        assert limiter.limit_for("publish") is None
        clock.sleep(5)
        assert limiter.limit_for("publish") is None
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        f"rates directory {missing} does not exist: every key is unlimited until it does"
    )
    missing.mkdir()
    (missing / "publish").write_text("5\n")
    clock.sleep(5)
    assert limiter.limit_for("publish") == Limit(5.0, 5.0)
    caplog.clear()
    (missing / "publish").unlink()
    missing.rmdir()
    clock.sleep(5)
    with caplog.at_level("WARNING", logger="busd_client.limiter"):
        assert limiter.limit_for("publish") is None
    assert [r.getMessage() for r in caplog.records] == [record.getMessage()]
    caplog.clear()
    with caplog.at_level("WARNING", logger="busd_client.limiter"):
        RateLimiter(tmp_path)  # a directory that exists: nothing to say
    assert caplog.records == []
