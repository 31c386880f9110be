"""busd applies subscriptions itself: a storm of prefixes from one subscriber is capped,
denied, counted and cut off; a prefix longer than any topic is denied; a canary beside them
loses nothing; the memory goes back when the attacker leaves.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq
from conftest import BusdProcess, TrackedContext, wait_for
from hostile import Canary, rss_kib
from rawproto import dealer, envelope, publish, subscriber, wait_subscribed

from busd_client.control import ControlClient

STORM = 100_000

# One SUB asking for STORM random 16-byte prefixes, then polling, so that libzmq reconnects
# it at once when busd cuts it and sends the whole set again.
_ATTACKER = textwrap.dedent(
    """
    import os, sys, zmq
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SNDHWM, 0)
    sub.connect(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        sub.setsockopt(zmq.SUBSCRIBE, os.urandom(16))
    print("sent", flush=True)
    while True:
        sub.poll(50)
    """
)


def broker_stats(busd: BusdProcess) -> dict[str, Any]:
    with ControlClient(busd.control) as control:
        stats: dict[str, Any] = control.call("stats")["stats"]["broker"]
    return stats


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_a_storm_of_prefixes_is_capped_denied_and_cut_while_a_canary_goes_on(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory()
    assert busd.proc is not None
    pid = busd.proc.pid
    canary = Canary(busd.pub_endpoint, busd.sub_endpoint).start()
    before = rss_kib(pid)
    attacker = subprocess.Popen(
        [sys.executable, "-c", _ATTACKER, busd.sub_endpoint, str(STORM)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert attacker.stdout is not None and attacker.stdout.readline() == b"sent\n"
        # 1,000 prefixes are applied, 64 more denied, then the connection is cut; the SUB
        # reconnects and asks again, and is cut again: each round costs busd about 1,065
        # requests and what libzmq took ahead of them.
        started = time.monotonic()
        wait_for(
            lambda: broker_stats(busd)["subscribers_cut"] >= 10 and time.monotonic() > started + 4,
            timeout=20,
            what="ten cuts in four seconds or more",
        )
        stats = broker_stats(busd)
        assert stats["subscriptions_denied"] >= 10 * 65, stats
        peaks = [rss_kib(pid)]
        wait_for(lambda: peaks.append(rss_kib(pid)) or len(peaks) > 20, what="samples")
        assert max(peaks) < before + 64 * 1024, f"RSS {before} -> {max(peaks)} KiB"
    finally:
        attacker.kill()
        attacker.communicate(timeout=10)
    # Only the canary's prefix is left once the attacker has gone.
    wait_for(lambda: broker_stats(busd)["subscriptions"] == 1, timeout=10, what="release")
    wait_for(lambda: rss_kib(pid) < before + 32 * 1024, timeout=10, what="RSS back")
    canary.stop()
    assert canary.lost() == [], canary.summary()
    assert canary.p99() < 0.050, canary.summary()
    print("canary", canary.summary(), "RSS KiB", before, "peak", max(peaks))


@pytest.mark.timeout(30)
def test_a_prefix_longer_than_any_topic_is_denied_and_counted_and_the_rest_applies(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    sub = subscriber(zctx, busd.sub_endpoint, "x" * 256, "release.")
    wait_subscribed(zctx, busd.pub_endpoint, sub, "release.shop")
    wait_for(lambda: broker_stats(busd)["subscriptions_denied"] == 1, what="the denial")
    assert broker_stats(busd)["subscriptions"] == 1  # release. only
    pub = dealer(zctx, busd.pub_endpoint)
    publish(pub, 1, "x" * 255, envelope("x" * 255))
    pub.recv()
    assert not sub.poll(200)  # the 256-byte prefix was never applied
    pub.close()
    sub.close()


@pytest.mark.timeout(30)
def test_subscriptions_over_the_cap_are_denied_and_those_under_it_still_deliver(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    busd = busd_factory(extra_args=("--max-subscriptions", "3"))
    # A SUB sends its prefixes in its trie's order on connecting: "release." first here.
    sub = subscriber(zctx, busd.sub_endpoint, "release.")
    wait_subscribed(zctx, busd.pub_endpoint, sub, "release.shop")
    for prefix in (b"a.", b"b.", b"c.", b"d."):
        sub.setsockopt(zmq.SUBSCRIBE, prefix)
    try:
        wait_for(lambda: broker_stats(busd)["subscriptions_denied"] == 2, what="two denied")
    except AssertionError:
        raise AssertionError(str(broker_stats(busd))) from None
    stats = broker_stats(busd)
    assert stats["subscriptions"] == 3 and stats["subscribers_cut"] == 0
    # Unsubscribing frees a place; a prefix asked for again is judged again.
    sub.setsockopt(zmq.UNSUBSCRIBE, b"b.")
    sub.setsockopt(zmq.UNSUBSCRIBE, b"d.")
    sub.setsockopt(zmq.SUBSCRIBE, b"d.")
    wait_for(lambda: broker_stats(busd)["subscribe_total"] == 6, what="the new request")
    stats = broker_stats(busd)
    assert stats["subscriptions"] == 3 and stats["subscriptions_denied"] == 2, stats
    sub.close()
    wait_for(lambda: broker_stats(busd)["subscriptions"] == 0, what="released on close")
