"""Delivery stamps (docs/protocol.md §3): every forwarded message carries busd's epoch and
its topic's sequence number in a third frame, and subscribers report what they lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import BusdProcess, TrackedContext, wait_for

from busd_client import (
    AsyncPoolSubscriber,
    AsyncSubscriber,
    Gap,
    PoolPublisher,
    PoolSubscriber,
    Publisher,
    Subscriber,
)
from busd_protocol.messages import decode_message
from busd_protocol.stamps import STAMP_LEN, read_stamp

pytestmark = pytest.mark.timeout(90)
BUSCTL = str(Path(sys.executable).parent / "busdctl")


def release_v1(i: int, pad: int = 0) -> dict[str, Any]:
    env = {"PAD": "x" * pad} if pad else {}
    return {"slug": f"https://apps.example/shop/releases/{i}", "cmd": "bin/web", "env": env}


def until_subscribed(pub: Publisher, sub: Subscriber, topic: str) -> None:
    """Publish probes on ``topic`` until one arrives: the subscription reached busd."""

    def arrived() -> bool:
        pub.publish_wait(topic, "release", 1, release_v1(0))
        return sub.recv(timeout=0.05) is not None

    wait_for(arrived, timeout=10, interval=0.0, what="the subscription to reach busd")
    while sub.recv(timeout=0.05) is not None:
        pass


def test_a_stock_sub_reads_topic_and_envelope_as_frames_0_and_1(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """A plain pyzmq SUB still decodes frames 0 and 1; frame 2 is the 16-byte stamp, one
    epoch, numbers counting 1, 2, 3 per topic."""
    sock = zctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"release.")
    sock.connect(busd.sub_endpoint)
    with Publisher(busd.pub_endpoint, name="stamps") as pub:

        def arrived() -> bool:
            pub.publish_wait("release.probe", "release", 1, release_v1(0))
            return bool(sock.poll(50))

        wait_for(arrived, timeout=10, interval=0.0, what="the subscription to reach busd")
        while sock.poll(50):
            sock.recv_multipart()
        for i in range(3):
            pub.publish_wait("release.a", "release", 1, release_v1(i))
            pub.publish_wait("release.b", "release", 1, release_v1(i))
    got = []
    for _ in range(6):
        assert sock.poll(5000)
        frames = sock.recv_multipart()
        assert len(frames) == 3 and len(frames[2]) == STAMP_LEN
        message = decode_message(frames[0], frames[1])
        stamp = read_stamp(frames[2])
        assert stamp is not None
        got.append((message.topic, message.data["slug"][-1], stamp))
    sock.close()
    assert len({epoch for _, _, (epoch, _) in got}) == 1
    a = [seq for topic, _, (_, seq) in got if topic == "release.a"]
    b = [seq for topic, _, (_, seq) in got if topic == "release.b"]
    assert a == [1, 2, 3] and b == [1, 2, 3]
    assert [n for topic, n, _ in got if topic == "release.a"] == ["0", "1", "2"]


def test_a_late_joiner_is_not_told_about_earlier_messages(busd: BusdProcess) -> None:
    """The first message of a topic only sets the baseline: no gap for what came before."""
    with Publisher(busd.pub_endpoint, name="stamps") as pub:
        for i in range(50):
            pub.publish_wait("release.late", "release", 1, release_v1(i))
        with Subscriber(busd.sub_endpoint, "release.") as sub:
            until_subscribed(pub, sub, "release.late")
            for i in range(20):
                pub.publish_wait("release.late", "release", 1, release_v1(i))
            for _ in range(20):
                assert sub.recv(timeout=5) is not None
            assert (sub.gaps, sub.missed, sub.epoch_changes) == (0, 0, 0)


def test_a_restart_of_busd_is_reported_as_an_epoch_change(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """kill -9 and a restart on the same ports: one Gap of kind "epoch", no false gap."""
    b = busd_factory()
    reports: list[Gap] = []
    with Subscriber(b.sub_endpoint, "release.", on_gap=reports.append) as sub:
        with Publisher(b.pub_endpoint, name="stamps") as pub:
            until_subscribed(pub, sub, "release.e")
            old_epoch = sub.tracker.last_gap
            b.kill()
        b.extra_args = (
            *b.extra_args,
            "--pub-endpoint",
            b.pub_endpoint,
            "--sub-endpoint",
            b.sub_endpoint,
        )
        b.start()
        with Publisher(b.pub_endpoint, name="stamps") as pub:
            until_subscribed(pub, sub, "release.e")
    assert old_epoch is None
    assert sub.epoch_changes == 1 and sub.gaps == 0
    assert [g.kind for g in reports] == ["epoch"]
    assert reports[0].previous is not None and reports[0].previous != reports[0].epoch


def test_a_stopped_subscriber_past_its_hwm_reports_exactly_what_it_lost(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """busdctl sub SIGSTOPped while 3,000 large messages pass (busd keeps 50 for it): after
    SIGCONT the gaps it prints add up to exactly the messages that never reached it."""
    b = busd_factory(extra_args=("--sub-hwm", "50"))
    proc = subprocess.Popen(
        [BUSCTL, "sub", "release.", "--sub-endpoint", b.sub_endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    published = 0
    try:
        with Publisher(b.pub_endpoint, name="loss", window=1000, timeout=30) as pub:

            def probe_seen() -> bool:
                pub.publish_wait("release.probe", "release", 1, release_v1(0))
                return any('"release.probe"' in line for line in lines)

            wait_for(probe_seen, timeout=15, interval=0.05, what="busdctl sub subscribed")
            proc.send_signal(signal.SIGSTOP)
            for i in range(3000):
                pub.publish("release.loss", "release", 1, release_v1(i, pad=8000))
            assert pub.flush(30) == []
            published = 3000
            proc.send_signal(signal.SIGCONT)

            def marker_seen() -> bool:
                nonlocal published
                pub.publish_wait("release.loss", "release", 1, release_v1(-1))
                published += 1
                return any("releases/-1" in line for line in lines)

            wait_for(marker_seen, timeout=15, interval=0.1, what="a marker after SIGCONT")
            # The backlog is drained (a marker came after it): one last message, published
            # once, so none is still on its way when busdctl sub stops.
            pub.publish_wait("release.loss", "release", 1, release_v1(-2))
            published += 1
            wait_for(
                lambda: any("releases/-2" in line for line in lines),
                timeout=15,
                what="the last message",
            )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    received = sum('"release.loss"' in line for line in lines)
    gap_lines = [line for line in err.splitlines() if "gap on release.loss" in line]
    lost = sum(int(line.split(": ")[2].split()[0]) for line in gap_lines)
    assert gap_lines and lost > 0
    assert received + lost == published
    assert f"{lost} message(s) lost" in err


def test_pool_failover_reports_no_false_gap_and_delivers_every_message(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """Two brokers, one killed with -9 mid-stream and restarted: every accepted message
    arrives once, no gap is reported, and the restart is one epoch change."""
    brokers = [busd_factory(name=f"b{k}") for k in range(2)]
    for b in brokers:
        b.extra_args = (
            *b.extra_args,
            "--pub-endpoint",
            b.pub_endpoint,
            "--sub-endpoint",
            b.sub_endpoint,
        )
    reports: list[Gap] = []
    subs = [b.sub_endpoint for b in brokers]
    pubs = [b.pub_endpoint for b in brokers]
    seen: set[str] = set()
    with (
        PoolSubscriber(subs, "release.", on_gap=reports.append) as sub,
        PoolPublisher(pubs, name="pool", timeout=30) as pub,
    ):
        probed: set[str] = set()

        def both_subscribed() -> bool:
            for k, b in enumerate(brokers):
                with Publisher(b.pub_endpoint, name=f"probe{k}") as one:
                    one.publish_wait("release.probe", "release", 1, release_v1(0))
            while (m := sub.recv(timeout=0.1)) is not None:
                probed.add(m.publisher)
            return probed >= {"probe0", "probe1"}

        wait_for(both_subscribed, timeout=15, interval=0.05, what="subscribed to both")
        receipts = []
        for i in range(4000):
            receipts.append(pub.publish("release.pool", "release", 1, release_v1(i)))
            if i == 1500:
                brokers[1].kill()
            if i == 2500:
                brokers[1].start()
            while (m := sub.recv(timeout=0)) is not None:
                seen.add(m.id)
        assert pub.flush(60) == []
        ids = {r.id for r in receipts}
        wait_for(lambda: _drain(sub, seen) >= ids, timeout=20, what="every message")
    assert sub.gaps == 0, reports
    assert all(g.kind == "epoch" for g in reports)
    assert len(seen) >= len(ids)


def _drain(sub: PoolSubscriber, seen: set[str]) -> set[str]:
    while (m := sub.recv(timeout=0.05)) is not None:
        seen.add(m.id)
    return seen


@pytest.mark.parametrize("pool", [False, True], ids=["AsyncSubscriber", "AsyncPoolSubscriber"])
def test_an_async_subscriber_that_stops_reading_counts_exactly_what_it_lost(
    busd_factory: Callable[..., BusdProcess], pool: bool
) -> None:
    """Not reading while 3,000 large messages pass (busd keeps 50, the SUB 10): what
    arrives plus what the gaps count is every message published, per broker in a pool."""
    brokers = [busd_factory(name=f"b{k}", extra_args=("--sub-hwm", "50")) for k in range(2)]
    if not pool:
        brokers = brokers[:1]
    asyncio.run(_stop_reading(brokers, pool))


async def _stop_reading(brokers: list[BusdProcess], pool: bool) -> None:
    reports: list[Gap] = []
    sub: AsyncSubscriber = (
        AsyncPoolSubscriber(
            [b.sub_endpoint for b in brokers], "release.", rcvhwm=10, on_gap=reports.append
        )
        if pool
        else AsyncSubscriber(brokers[0].sub_endpoint, "release.", rcvhwm=10, on_gap=reports.append)
    )
    async with sub:
        pubs = [Publisher(b.pub_endpoint, name="loss", window=1000, timeout=30) for b in brokers]
        try:
            for pub in pubs:  # each broker has the subscription
                while True:
                    pub.publish_wait("release.probe", "release", 1, release_v1(0))
                    if await sub.recv(timeout=0.05) is not None:
                        break
            while await sub.recv(timeout=0.2) is not None:
                pass
            for i in range(3000):
                pubs[i % len(pubs)].publish("release.loss", "release", 1, release_v1(i, 8000))
            for pub in pubs:
                assert pub.flush(30) == []
            received = 0
            while await sub.recv(timeout=1.0) is not None:
                received += 1
            markers = 0
            for pub in pubs:  # one more per broker: a loss at the very end shows too
                pub.publish_wait("release.loss", "release", 1, release_v1(-1))
                markers += 1
            while (m := await sub.recv(timeout=2.0)) is not None:
                received += 1
                markers -= m.data["slug"].endswith("/-1")
                if not markers:
                    break
        finally:
            for pub in pubs:
                pub.close()
    assert sub.gaps > 0 and sub.missed > 0
    assert received + sub.missed == 3000 + len(brokers)
    assert sum(g.missing for g in reports) == sub.missed
