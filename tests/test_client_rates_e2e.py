"""The publisher's handling of busd's rate limits (files in busd's rates directory)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from busd_client import Disabled, Publisher, PublishTimeout, RateLimited

RELEASE = {"slug": "https://apps.example/shop/releases/42", "cmd": "bin/web", "env": {}}


def set_rate(busd: Any, key: str, content: str) -> None:
    tmp = Path(busd.rates_dir) / f".{key}.new"
    tmp.write_text(content)
    tmp.rename(Path(busd.rates_dir) / key)  # atomic: busd never reads half a file


def until_refused(pub: Publisher, error: type[Exception], timeout: float = 10.0) -> Any:
    """Publish until busd refuses with ``error``: it has read the rate file."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pub.publish_wait("release.rates.probe", "release", 2, RELEASE, retry_deadline=None)
        except error as exc:
            return exc
        assert time.monotonic() < deadline, "busd never applied the rate file"


@pytest.mark.timeout(30)
def test_rate_zero_raises_disabled_with_the_key(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="rates") as pub:
        set_rate(busd, "publish", "0\n")
        err = until_refused(pub, Disabled)
        assert (err.code, err.key) == ("disabled", "publish")


@pytest.mark.timeout(30)
def test_empty_bucket_raises_rate_limited_without_retry_deadline(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="rates") as pub:
        set_rate(busd, "publish", "0.5 1\n")
        err = until_refused(pub, RateLimited)
        assert err.key == "publish"
        assert 0 < err.retry_after_ms <= 2000


@pytest.mark.timeout(30)
def test_rate_limited_messages_are_retried_until_accepted(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="rates", retry_deadline=10) as pub:
        set_rate(busd, "publish", "5 1\n")
        until_refused(pub, RateLimited)
        start = time.monotonic()
        receipts = [pub.publish("release.rates.x", "release", 2, RELEASE) for i in range(5)]
        assert pub.flush(15) == []
        assert all(r.accepted for r in receipts)
        assert sum(r.attempts for r in receipts) > 5  # some were refused, then resent
        assert time.monotonic() - start >= 0.7  # 5 tokens at 5/s from an empty bucket


@pytest.mark.timeout(30)
def test_waiting_when_disabled_ends_accepted_once_reenabled(busd: Any) -> None:
    with Publisher(
        busd.pub_endpoint, name="rates", retry_deadline=15, wait_when_disabled=True
    ) as pub:
        set_rate(busd, "publish", "0\n")
        until_refused(pub, Disabled)
        r = pub.publish("release.rates.x", "release", 2, RELEASE)
        deadline = time.monotonic() + 10
        while r.attempts < 2:  # refused at least once, then resent
            assert time.monotonic() < deadline
            with contextlib.suppress(PublishTimeout):
                r.result(0.05)
        set_rate(busd, "publish", "1000\n")
        r.result(12)
        assert r.accepted and r.attempts >= 2
