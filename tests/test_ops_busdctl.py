"""busdctl stats and busdctl top against a real busd's metrics endpoint."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import BIN, BusdProcess, TrackedContext, wait_for
from opshttp import scrape, value
from rawproto import collect, dealer, envelope, publish
from stateclient import request

from busd_client import Publisher
from busd_client.cli.exposition import parse_exposition
from busd_client.cli.stats import Summary, render_frame
from busd_protocol.snapshots import End


def busdctl(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "busdctl"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def traffic(zctx: TrackedContext, busd: BusdProcess, accepted: int, bad: int) -> None:
    pub = dealer(zctx, busd.pub_endpoint)
    for seq in range(1, accepted + 1):
        publish(pub, seq, "release.top", envelope("release.top", id=f"top-{seq}"))
    for seq in range(accepted + 1, accepted + bad + 1):
        publish(pub, seq, "release.top", b"\xc1")
    fates = collect(pub, accepted + bad)
    assert sum(f["code"] == "accepted" for f in fates.values()) == accepted
    pub.close()


@pytest.mark.timeout(30)
def test_stats_json_reports_the_counts_of_known_traffic(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    busd = busd_factory(start=False)
    (busd.rates_dir / "publish.release.slow").write_text("0.001 1\n")
    busd.start()
    traffic(zctx, busd, accepted=12, bad=3)
    pub = dealer(zctx, busd.pub_endpoint)
    for seq in range(1, 5):
        publish(pub, seq, "release.slow")
    assert [f["code"] for f in collect(pub, 4).values()].count("rate_limited") == 3
    pub.close()
    result = busdctl("stats", "--json", "--metrics", busd.metrics)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["received"], stats["accepted"]) == (19, 13)
    assert stats["rejected"] == {"bad_encoding": 3, "rate_limited": 3}
    assert stats["throttled"] == {"publish.release.slow": 3}
    assert stats["ready"] is True and stats["version"] == "0.1.0"
    assert stats["latency_ms"]["p99"] is not None and stats["latency_ms"]["p99"] > 0


@pytest.mark.timeout(30)
def test_top_once_renders_one_frame_with_rates_rejects_connections_and_latency(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path, zctx: TrackedContext
) -> None:
    """A frame taken while a publisher streams shows a non-zero inbound rate."""
    path = tmp_path / "a.toml"
    path.write_text('[assertions.publishers]\nexpr = "publishers_connected >= 1"\nwindow = "1s"\n')
    busd = busd_factory(extra_args=("--assertions", str(path)))
    traffic(zctx, busd, accepted=5, bad=2)
    stop = threading.Event()
    raw = msgpack.packb(envelope("release.top"))

    def stream() -> None:
        pub = dealer(zctx, busd.pub_endpoint)
        seq = 0
        while not stop.wait(0.005):
            seq += 1
            publish(pub, seq, "release.top", raw)
            while pub.poll(0):
                pub.recv()
        pub.close()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: value(scrape(busd.metrics), "busd_assertion_ok", name="publishers") == 1,
            what="the publishers assertion sees the streaming publisher",
        )
        result = busdctl("top", "--once", "--interval", "0.5", "--metrics", busd.metrics)
    finally:
        stop.set()
        thread.join(5)
    assert result.returncode == 0, result.stderr
    frame = result.stdout
    assert "\x1b[" not in frame  # not a terminal: no screen clearing
    lines = frame.splitlines()
    assert lines[0].startswith(f"busd 0.1.0 at {busd.metrics}   ready   up ")
    assert "interval 0.5s" in lines[0]
    rates = next(line for line in lines if line.startswith("messages/s")).split()
    assert float(rates[2]) > 0  # in
    assert any(line.split()[:1] == ["bad_encoding"] and line.split()[-1] == "2" for line in lines)
    assert next(line for line in lines if line.startswith("connections")).split()[2] == "1"
    assert next(line for line in lines if line.startswith("latency")).split()[2].startswith("<=")
    assert any(line.split() == ["publishers", "ok"] for line in lines)


@pytest.mark.timeout(20)
def test_stats_and_top_once_exit_3_when_busd_cannot_be_reached() -> None:
    for args in (("stats",), ("top", "--once")):
        result = busdctl(*args, "--metrics", "127.0.0.1:1")
        assert result.returncode == 3
        assert result.stderr.startswith("busdctl: cannot read metrics from 127.0.0.1:1")
    result = busdctl("stats", "--metrics", "127.0.0.1:1", "--json")
    assert json.loads(result.stdout)["error"]["code"] == "unavailable"


class Terminal:
    """A program on a real pseudo-terminal: what it wrote, and keys typed at it."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        self.master = master
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.text = ""

    def wait_for(self, needle: str, after: int, timeout: float = 15.0) -> int:
        """Read until ``needle`` appears past offset ``after``; its end offset."""
        deadline = time.monotonic() + timeout
        while (found := self.text.find(needle, after)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} on the terminal; last: {self.text[-500:]!r}"
            if select.select([self.master], [], [], left)[0]:
                self.text += os.read(self.master, 65536).decode(errors="replace")
        return found + len(needle)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        os.close(self.master)


@pytest.mark.timeout(60)
def test_top_shows_down_keeps_trying_shows_busd_when_it_is_back_and_quits_on_q(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(start=False)
    term = Terminal([str(BIN / "busdctl"), "top", "--metrics", busd.metrics, "--interval", "0.2"])
    try:
        at = term.wait_for(f"busd at {busd.metrics}   DOWN   no answer since ", 0)
        at = term.wait_for("(3 tries)", at)  # still trying
        assert "Connection refused" in term.text and "q quits" in term.text
        busd.start()
        at = term.wait_for(f"busd 0.1.0 at {busd.metrics}   ready", at)
        busd.kill()
        at = term.wait_for("   DOWN   ", at)
        term.type(b"q")
        assert term.proc.wait(5) == 0
    finally:
        term.close()
    assert "\x1b[H\x1b[2J" in term.text  # a terminal: the screen is redrawn


def test_a_frame_shows_rates_over_the_interval_and_throttles_by_key() -> None:
    """render_frame on two parsed scrapes ten seconds apart (no busd needed)."""

    def text(received: int, limited: int, le_fast: int, total: int) -> str:
        return (
            f"busd_messages_received_total {received}\n"
            f"busd_messages_accepted_total {received - limited}\n"
            f'busd_messages_rejected_total{{code="rate_limited"}} {limited}\n'
            f'busd_rate_key_throttled_total{{key="publish.release"}} {limited}\n'
            f'busd_processing_latency_seconds_bucket{{le="0.001"}} {le_fast}\n'
            f'busd_processing_latency_seconds_bucket{{le="0.05"}} {total}\n'
            f'busd_processing_latency_seconds_bucket{{le="+Inf"}} {total}\n'
            'busd_ready 1\nbusd_build_info{version="9.9",protocol="1"} 1\n'
        )

    then = Summary.of(parse_exposition(text(1000, 0, 1000, 1000)), at=100.0)
    now = Summary.of(parse_exposition(text(3000, 500, 1000, 2500)), at=110.0)
    frame = render_frame(now, then, "bus:7403", wall=0.0)
    lines = frame.splitlines()
    assert lines[0].startswith("busd 9.9 at bus:7403   ready")
    assert next(x for x in lines if x.startswith("messages/s")).split() == [
        "messages/s",
        "in",
        "200.0",
        "out",
        "150.0",
        "rejected",
        "50.0",
    ]
    latency = next(x for x in lines if x.startswith("latency")).split()
    assert latency[1:5] == ["p50", "<=50", "ms", "p99"]  # the window saw only slow ones
    throttles = lines.index(next(x for x in lines if x.startswith("throttles by rate key")))
    assert lines[throttles + 1].split() == ["publish.release", "50.0", "500"]


def instance(n: int, state: str = "up") -> dict[str, object]:
    return {
        "app": "web",
        "instance_id": str(n),
        "state": state,
        "host": "h1.example",
        "version": "1",
        "reported_at": n,
    }


@pytest.mark.timeout(40)
def test_stats_reports_the_state_held_its_evictions_and_the_snapshots_served(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    """Five keys into a cache of three (two evicted at the bound), one ended by ``down``,
    one snapshot served and one malformed request: `busdctl stats` shows each figure."""
    busd = busd_factory(extra_args=("--state-max-entries", "3"))
    with Publisher(busd.pub_endpoint, name="reporter", timeout=20) as pub:
        for n in range(5):
            pub.publish("instance.web", "instance-state", 1, instance(n))
        pub.publish("instance.web", "instance-state", 1, instance(4, "down"))
        assert pub.flush() == []
    _parts, end = request(zctx, busd.state_endpoint, "instance.")
    assert isinstance(end, End) and end.entries == 2
    state_dealer = zctx.socket(zmq.DEALER)
    state_dealer.connect(busd.state_endpoint)
    state_dealer.send(b"\xc1")
    assert state_dealer.poll(5000)
    assert msgpack.unpackb(state_dealer.recv())["error"] == "bad_request"
    state_dealer.close()
    held_bytes = value(scrape(busd.metrics), "busd_state_bytes")
    assert held_bytes is not None and held_bytes > 0

    result = busdctl("stats", "--json", "--metrics", busd.metrics)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)["state"]
    assert (state["entries"], state["bytes"], state["ended"]) == (2, held_bytes, 1)
    assert state["evicted"] == {"bound": 2, "ttl": 0}
    snapshots = state["snapshots"]
    assert {k: n for k, n in snapshots["requests"].items() if n} == {"ok": 1, "bad_request": 1}
    assert snapshots["active"] == 0
    assert snapshots["duration_ms"]["p99"] is not None and snapshots["duration_ms"]["p99"] > 0

    text = busdctl("stats", "--metrics", busd.metrics)
    assert text.returncode == 0, text.stderr
    rows = {line.split()[0]: line.split() for line in text.stdout.splitlines() if line.strip()}
    assert rows["state"][:3] == ["state", "keys", "2"] and rows["state"][-2:] == ["ended", "1"]
    assert rows["evicted"] == ["evicted", "bound", "2", "ttl", "0"]
    snap = rows["snapshots"]
    assert snap[:3] == ["snapshots", "ok", "1"] and snap[-4:] == ["failed", "1", "active", "0"]
    assert snap[4].startswith("<=")


def test_a_busd_that_exports_no_state_figures_shows_no_state_rows() -> None:
    """A busd older than the state cache: no state rows, and ``state`` null in the JSON."""
    summary = Summary.of(parse_exposition("busd_ready 1\nbusd_messages_received_total 5\n"), 1.0)
    assert summary.state is None and summary.as_dict()["state"] is None
    frame = render_frame(summary, None, "bus:7403", wall=0.0)
    assert not any(line.split()[:1] in (["state"], ["snapshots"]) for line in frame.splitlines())
