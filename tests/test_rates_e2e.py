"""Rate limits end to end: a real busd, its rates directory, its control socket, raw DEALERs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from busd_client.control import ControlClient
from tests.conftest import BusdProcess, TrackedContext
from tests.rawproto import collect, dealer, envelope, header

pytestmark = pytest.mark.timeout(30)
BUSDCTL = str(Path(sys.executable).parent / "busdctl")


def instance_envelope(topic: str = "instance.web") -> dict[str, Any]:
    return {
        "topic": topic,
        "schema": "instance-state",
        "version": 1,
        "id": "i-1",
        "publisher": "tester",
        "ts": time.time_ns(),
        "data": {
            "app": "shop",
            "instance_id": "web.1",
            "state": "up",
            "host": "web-1.example",
            "version": "42",
            "reported_at": 1,
        },
    }


class Peer:
    """A publisher DEALER that sends one message and waits for its fate."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], busd: BusdProcess):
        self.sock = dealer(ctx, busd.pub_endpoint)
        self.seq = 0

    def send(self, topic: str, env: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        self.sock.send_multipart([header(self.seq), topic.encode(), msgpack.packb(env)])
        return collect(self.sock, 1)[self.seq]

    def until(
        self, code: str, topic: str, env: dict[str, Any], within: float = 1.0
    ) -> dict[str, Any]:
        """Publish while traffic flows until a message gets ``code``; fail after ``within``."""
        started = time.monotonic()
        while True:
            fate = self.send(topic, env)
            if fate["code"] == code:
                return fate
            elapsed = time.monotonic() - started
            assert elapsed < within, f"still {fate['code']} {elapsed:.2f}s later, not {code}"


@pytest.fixture
def peer(busd: BusdProcess, zctx: TrackedContext) -> Iterator[Peer]:
    made = Peer(zctx, busd)
    yield made
    made.sock.close()


def echo(value: str, path: Path) -> None:
    """What an operator types: the shell truncates the file, then writes it."""
    subprocess.run(["sh", "-c", f"echo {value} > '{path}'"], check=True)


def test_echo_0_stops_acceptance_within_a_second_and_500_resumes(
    busd: BusdProcess, peer: Peer
) -> None:
    assert peer.send("release.shop", envelope())["code"] == "accepted"
    echo("0", busd.rates_dir / "publish")
    fate = peer.until("disabled", "release.shop", envelope())
    assert fate["key"] == "publish"
    assert peer.send("instance.web", instance_envelope())["code"] == "disabled"
    echo("500", busd.rates_dir / "publish")
    peer.until("accepted", "release.shop", envelope())
    line = busd.wait_log(
        "rate limit changed", key="publish", old="0/s burst 1", new="500/s burst 500", source="file"
    )
    assert line["level"] == "info"  # routine: journalctl -p warning does not show it


def test_a_prefix_key_stops_only_topics_with_that_prefix(busd: BusdProcess, peer: Peer) -> None:
    echo("0", busd.rates_dir / "publish.release")
    fate = peer.until("disabled", "release.shop", envelope())
    assert fate["key"] == "publish.release"
    for _ in range(20):
        assert peer.send("instance.web", instance_envelope())["code"] == "accepted"
    assert peer.send("release.other", envelope("release.other"))["code"] == "disabled"


def test_a_publisher_key_stops_only_that_publisher(busd: BusdProcess, peer: Peer) -> None:
    echo("0", busd.rates_dir / "publisher.deployer")
    fate = peer.until("disabled", "release.shop", envelope(publisher="deployer"))
    assert fate["key"] == "publisher.deployer"
    for _ in range(20):
        assert peer.send("release.shop", envelope(publisher="tester"))["code"] == "accepted"


def test_bad_file_content_keeps_the_limit_and_is_shown_by_busdctl_rates(
    busd: BusdProcess, peer: Peer
) -> None:
    echo("0", busd.rates_dir / "publish")
    peer.until("disabled", "release.shop", envelope())
    echo("nan", busd.rates_dir / "publish")
    busd.wait_log("rate file problem", kind="content")
    assert peer.send("release.shop", envelope())["code"] == "disabled"
    shown = subprocess.run(
        [BUSDCTL, "rates", "--control", busd.control], check=False, capture_output=True, text=True
    )
    assert shown.returncode == 4  # listed, with a rates file refused
    out = shown.stdout
    assert "publish" in out and "content" in out and 'got "nan\\n"' in out


@pytest.mark.timeout(40)
def test_rate_1000_burst_100_offered_5000_per_second_accepts_rate_plus_burst(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """2 s of 5,000/s offered: about 100 + 1,000 per second accepted, the rest rate_limited."""
    with ControlClient(busd.control) as control:
        control.call("rates.set", key="publish", rate=1000, burst=100)
    sock = dealer(zctx, busd.pub_endpoint)
    # Replies are read after the last send: with libzmq's default receive queue (1,000) a
    # busy machine's many small wake-ups could fill busd's reply queue to this publisher, and
    # busd cuts a publisher that does not read its replies (docs/protocol.md §2.5).
    sock.setsockopt(zmq.RCVHWM, 0)
    body = msgpack.packb(envelope())
    topic = b"release.shop"
    count, per_ms = 10_000, 5
    try:
        started = time.monotonic()
        for seq in range(1, count + 1):
            sock.send_multipart([header(seq), topic, body])
            if seq % per_ms == 0:  # pace: 5 messages per millisecond
                while time.monotonic() < started + seq / (per_ms * 1000):
                    pass
        span = time.monotonic() - started
        fates = collect(sock, count, timeout=20)
    finally:
        sock.close()
    assert count / span > 4000, f"offered only {count / span:.0f}/s"
    accepted = sum(1 for f in fates.values() if f["code"] == "accepted")
    refused = [f for f in fates.values() if f["code"] != "accepted"]
    expected = 100 + 1000 * span
    assert abs(accepted - expected) <= 0.1 * expected, (accepted, expected)
    assert {(f["code"], f["key"]) for f in refused} == {("rate_limited", "publish")}
    assert all(1 <= f["retry_after_ms"] <= 1000 for f in refused)
    with ControlClient(busd.control) as control:
        [row] = control.call("rates.list")["limits"]
    assert row["throttled_total"] == len(refused)


def test_a_limit_set_with_busdctl_survives_kill_9_and_restart(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    subprocess.run(
        [BUSDCTL, "rate", "set", "publish.release", "0", "--control", busd.control],
        check=True,
        capture_output=True,
    )
    assert (busd.rates_dir / "publish.release").read_text() == "0\n"
    busd.kill()
    busd.start()  # the stale control socket is replaced; the directory applies before ready
    peer = Peer(zctx, busd)
    try:
        fate = peer.send("release.shop", envelope())
        assert (fate["code"], fate["key"]) == ("disabled", "publish.release")
        assert peer.send("instance.web", instance_envelope())["code"] == "accepted"
    finally:
        peer.sock.close()
    with ControlClient(busd.control) as control:
        assert control.call("rates.list")["limits"][0]["key"] == "publish.release"
