"""busd_client against a real busd process: round trips, rejections, backpressure, restarts."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from busd_client import (
    AsyncPublisher,
    AsyncSubscriber,
    Message,
    Publisher,
    PublishTimeout,
    Rejected,
    Subscriber,
)

PROBE = "e2e.probe"


def join(pub: Publisher, sub: Subscriber, timeout: float = 10.0) -> None:
    """Publish probes until one arrives: the subscription has reached busd."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish_wait(PROBE, "probe", 1, {})
        if sub.recv(0.05) is not None:
            return
    raise AssertionError("the subscription never reached busd")


def collect(sub: Subscriber, count: int, timeout: float = 10.0) -> list[Message]:
    """``count`` messages that are not probes, in arrival order."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        message = sub.recv(max(0.0, deadline - time.monotonic()))
        assert message is not None, f"got {len(got)} of {count} messages"
        if message.topic != PROBE:
            got.append(message)
    return got


@pytest.mark.timeout(30)
def test_sync_round_trip_delivers_every_message_in_order(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="e2e", timeout=5) as pub, \
            Subscriber(busd.sub_endpoint, "e2e.") as sub:
        join(pub, sub)
        receipts = [pub.publish("e2e.data", "release", 2, {"i": i, "s": "x" * (i % 7)})
                    for i in range(2000)]
        assert pub.flush(10) == []
        assert all(r.accepted for r in receipts)
        messages = collect(sub, 2000)
        assert [m.id for m in messages] == [r.id for r in receipts]
        assert [m.data["i"] for m in messages] == list(range(2000))
        first = messages[0]
        assert (first.topic, first.schema, first.version, first.publisher) == (
            "e2e.data", "release", 2, "e2e")
        assert abs(first.ts - time.time_ns()) < 60 * 10**9


@pytest.mark.timeout(30)
async def test_async_round_trip_delivers_every_message(busd: Any) -> None:
    async with AsyncPublisher(busd.pub_endpoint, name="e2e-async", timeout=5) as pub, \
            AsyncSubscriber(busd.sub_endpoint, "e2e.") as sub:
        deadline = time.monotonic() + 10
        while await sub.recv(0.05) is None:  # wait until the subscription reached busd
            assert time.monotonic() < deadline
            await pub.publish_wait(PROBE, "probe", 1, {})
        receipts = [await pub.publish("e2e.data", "release", 1, {"i": i}) for i in range(500)]
        assert await pub.flush(10) == []
        ids = []
        while len(ids) < 500:
            message = await sub.recv(5)
            assert message is not None
            if message.topic != PROBE:
                ids.append(message.id)
        assert ids == [r.id for r in receipts]
        await asyncio.sleep(0)


@pytest.mark.timeout(20)
def test_rejection_raises_typed_exception_with_code(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="e2e") as pub:
        with pytest.raises(Rejected) as info:
            pub.publish_wait("has space", "release", 1, {})
        assert info.value.code == "bad_topic"
        assert info.value.reason
        ok = pub.publish_wait("e2e.ok", "release", 1, {})  # the connection is still good
        assert ok.accepted


@pytest.mark.timeout(30)
def test_window_holds_publishers_while_busd_is_stopped(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="e2e", window=50, timeout=1.0) as pub:
        pub.publish_wait("e2e.x", "release", 1, {})
        busd.signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            for i in range(50):
                pub.publish("e2e.x", "release", 1, {"i": i})
            assert time.monotonic() - start < 0.5  # the window is not full yet
            assert pub.pending == 50
            pub.publish("e2e.x", "release", 1, {"i": 50})  # waits until the oldest time out
            assert time.monotonic() - start >= 0.9
            assert pub.pending <= 50
        finally:
            busd.signal(signal.SIGCONT)
        failures = pub.flush(10)
        assert failures and all(isinstance(e, PublishTimeout) and e.sent for e in failures)
        assert pub.publish_wait("e2e.x", "release", 1, {}).accepted


@pytest.mark.timeout(60)
def test_same_objects_keep_working_after_busd_is_killed_and_restarted(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="e2e", timeout=1.0, reconnect_ivl_max=0.2) as pub, \
            Subscriber(busd.sub_endpoint, "e2e.", reconnect_ivl_max=0.2) as sub:
        join(pub, sub)
        busd.kill()
        with pytest.raises(PublishTimeout):  # nobody to send to, or no reply (fate unknown)
            pub.publish_wait("e2e.lost", "release", 1, {})
        busd.start()
        join(pub, sub)  # publisher and subscriber reconnected by themselves
        receipts = [pub.publish("e2e.after", "release", 1, {"i": i}) for i in range(100)]
        assert pub.flush(10) == []
        assert [m.id for m in collect(sub, 100)] == [r.id for r in receipts]


@pytest.mark.timeout(60)
def test_sync_publisher_sustains_high_rate(busd: Any) -> None:
    n = 30_000
    with Publisher(busd.pub_endpoint, name="e2e") as pub:
        pub.publish_wait("e2e.warm", "release", 1, {})
        start = time.perf_counter()
        for i in range(n):
            pub.publish("e2e.rate", "release", 1, {"i": i})
        assert pub.flush(20) == []
        rate = n / (time.perf_counter() - start)
    print(f"sync publish+ack: {rate:,.0f} msg/s")
    assert rate > 5_000  # a floor for a loaded 2-core CI box; ~100k/s measured idle
