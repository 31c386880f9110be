"""Subscribers record end-to-end latency (receive time minus the publisher's ts)."""

from __future__ import annotations

import time

import pytest
from conftest import BusdProcess, wait_for

from busd_client import AsyncSubscriber, Publisher, Subscriber
from busd_client.latency import LatencyRecorder

DATA = {
    "slug": "https://apps.example/shop/releases/42",
    "cmd": "bin/web",
    "env": {"RACK_ENV": "production"},
}


@pytest.mark.parametrize(
    ("latency_ns", "bucket_us"),
    [
        (0, 1),
        (1, 1),
        (1_000, 1),
        (1_001, 2),
        (2_000, 2),
        (2_001, 4),
        (1_000_000, 1024),
        (10**15, 2**32),
    ],
)
def test_latencies_land_in_power_of_two_microsecond_buckets(
    latency_ns: int, bucket_us: int
) -> None:
    rec = LatencyRecorder()
    rec.observe_ns(latency_ns)
    assert rec.snapshot().quantile(1.0) == bucket_us / 1e6


def test_quantiles_and_clock_skew_are_reported() -> None:
    rec = LatencyRecorder()
    for _ in range(99):
        rec.observe_ns(50_000)
    rec.observe_ns(5_000_000)
    rec.observe_ns(-1)
    snap = rec.snapshot()
    assert (snap.count, snap.negative) == (100, 1)
    assert snap.quantile(0.5) == 64e-6
    assert snap.quantile(0.995) == 8192e-6
    assert LatencyRecorder().snapshot().quantile(0.5) is None


@pytest.mark.timeout(30)
def test_a_subscriber_records_the_latency_of_every_message(busd: BusdProcess) -> None:
    with (
        Subscriber(busd.sub_endpoint, ["release."]) as sub,
        Publisher(busd.pub_endpoint, name="lat") as pub,
    ):

        def probe() -> bool:
            pub.publish_wait("release.warm", "release", 2, DATA)
            return sub.recv(timeout=0.2) is not None

        wait_for(probe, timeout=10, what="subscription in place")
        while sub.recv(timeout=0.2) is not None:
            pass
        before = sub.latency.snapshot().count
        for _ in range(50):
            pub.publish("release.lat", "release", 2, DATA)
        assert pub.flush(10) == []
        got = 0
        while got < 50 and sub.recv(timeout=5) is not None:
            got += 1
        snap = sub.latency.snapshot()
        assert got == 50 and snap.count - before == 50
        p99 = snap.quantile(0.99)
        assert p99 is not None and 0 < p99 < 10


@pytest.mark.timeout(30)
async def test_an_async_subscriber_records_latency_too(busd: BusdProcess) -> None:
    sub = AsyncSubscriber(busd.sub_endpoint, ["release."])
    try:
        with Publisher(busd.pub_endpoint, name="lat") as pub:
            deadline = time.monotonic() + 10
            message = None
            while message is None and time.monotonic() < deadline:
                pub.publish_wait("release.lat", "release", 2, DATA)
                message = await sub.recv(timeout=0.2)
        assert message is not None
        assert sub.latency.snapshot().count >= 1
    finally:
        sub.close()
