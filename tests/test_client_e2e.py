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

PROBE = "release.e2e.probe"
PREFIX = "release.e2e."


def release(i: int = 0) -> dict[str, Any]:
    """A valid release v2 payload (busd checks schemas) numbered ``i``."""
    return {"slug": "https://apps.example/shop/releases/42", "cmd": "bin/web", "env": {"N": str(i)}}


def join(pub: Publisher, sub: Subscriber, timeout: float = 10.0) -> None:
    """Publish probes until one arrives: the subscription has reached busd."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish_wait(PROBE, "release", 2, release())
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
    with (
        Publisher(busd.pub_endpoint, name="e2e", timeout=5) as pub,
        Subscriber(busd.sub_endpoint, PREFIX) as sub,
    ):
        join(pub, sub)
        receipts = [pub.publish("release.e2e.data", "release", 2, release(i)) for i in range(2000)]
        assert pub.flush(10) == []
        assert all(r.accepted for r in receipts)
        messages = collect(sub, 2000)
        assert [m.id for m in messages] == [r.id for r in receipts]
        assert [m.data["env"]["N"] for m in messages] == [str(i) for i in range(2000)]
        first = messages[0]
        assert (first.topic, first.schema, first.version, first.publisher) == (
            "release.e2e.data",
            "release",
            2,
            "e2e",
        )
        assert abs(first.ts - time.time_ns()) < 60 * 10**9


@pytest.mark.timeout(30)
async def test_async_round_trip_delivers_every_message(busd: Any) -> None:
    async with (
        AsyncPublisher(busd.pub_endpoint, name="e2e-async", timeout=5) as pub,
        AsyncSubscriber(busd.sub_endpoint, PREFIX) as sub,
    ):
        deadline = time.monotonic() + 10
        while await sub.recv(0.05) is None:  # wait until the subscription reached busd
            assert time.monotonic() < deadline
            await pub.publish_wait(PROBE, "release", 2, release())
        receipts = [
            await pub.publish("release.e2e.data", "release", 2, release(i)) for i in range(500)
        ]
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
            pub.publish_wait("release.has space", "release", 2, release())
        assert info.value.code == "bad_topic"
        assert info.value.reason
        # The connection is still good.
        ok = pub.publish_wait("release.e2e.ok", "release", 2, release())
        assert ok.accepted


@pytest.mark.timeout(20)
def test_schema_rejections_carry_code_and_reason(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="e2e") as pub:
        bad = release()
        bad["cmd"] = 7
        with pytest.raises(Rejected) as info:
            pub.publish_wait("release.e2e.bad", "release", 2, bad)
        assert info.value.code == "invalid"
        assert "cmd" in info.value.reason
        with pytest.raises(Rejected) as info:
            pub.publish_wait("release.e2e.bad", "no-such-schema", 1, {})
        assert info.value.code == "unknown_schema"
        receipts = [
            pub.publish("release.e2e.mixed", "release", 2, release() if i % 2 else bad)
            for i in range(10)
        ]
        failures = pub.flush(5)
        assert [e.id for e in failures] == [r.id for r in receipts[::2]]
        assert all(isinstance(e, Rejected) and e.code == "invalid" for e in failures)


@pytest.mark.timeout(30)
def test_window_holds_publishers_while_busd_is_stopped(busd: Any) -> None:
    with Publisher(busd.pub_endpoint, name="e2e", window=50, timeout=1.0) as pub:
        pub.publish_wait("release.e2e.x", "release", 2, release())
        busd.signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            for i in range(50):
                pub.publish("release.e2e.x", "release", 2, release(i))
            assert time.monotonic() - start < 0.5  # the window is not full yet
            assert pub.pending == 50
            # The next one waits until the oldest time out.
            pub.publish("release.e2e.x", "release", 2, release(50))
            assert time.monotonic() - start >= 0.9
            assert pub.pending <= 50
        finally:
            busd.signal(signal.SIGCONT)
        failures = pub.flush(10)
        assert failures and all(isinstance(e, PublishTimeout) and e.sent for e in failures)
        assert pub.publish_wait("release.e2e.x", "release", 2, release()).accepted


@pytest.mark.timeout(60)
def test_same_objects_keep_working_after_busd_is_killed_and_restarted(busd: Any) -> None:
    with (
        Publisher(busd.pub_endpoint, name="e2e", timeout=1.0, reconnect_ivl_max=0.2) as pub,
        Subscriber(busd.sub_endpoint, PREFIX, reconnect_ivl_max=0.2) as sub,
    ):
        join(pub, sub)
        busd.kill()
        with pytest.raises(PublishTimeout):  # nobody to send to, or no reply (fate unknown)
            pub.publish_wait("release.e2e.lost", "release", 2, release())
        busd.start()
        join(pub, sub)  # publisher and subscriber reconnected by themselves
        receipts = [pub.publish("release.e2e.after", "release", 2, release(i)) for i in range(100)]
        assert pub.flush(10) == []
        assert [m.id for m in collect(sub, 100)] == [r.id for r in receipts]


@pytest.mark.timeout(60)
def test_sync_publisher_sustains_high_rate(busd: Any) -> None:
    n = 30_000
    with Publisher(busd.pub_endpoint, name="e2e") as pub:
        pub.publish_wait("release.e2e.warm", "release", 2, release())
        start = time.perf_counter()
        for i in range(n):
            pub.publish("release.e2e.rate", "release", 2, release(i))
        assert pub.flush(20) == []
        rate = n / (time.perf_counter() - start)
    print(f"sync publish+ack: {rate:,.0f} msg/s")
    assert rate > 5_000  # a floor for a loaded 2-core CI box; ~100k/s measured idle
