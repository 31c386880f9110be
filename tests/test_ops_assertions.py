"""Service-level assertions in a real busd: busd_assertion_ok, /readyz, logs and reload."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BusdProcess, TrackedContext, wait_for
from opshttp import get, scrape, value
from rawproto import collect, dealer, publish

ASSERTIONS = """
[assertions.latency]
expr = "p99_latency_ms < 0.000001"   # no real message is that fast: any traffic violates it
window = "1s"
critical = true

[assertions.publishers]
expr = "publishers_connected >= 1"
window_seconds = 1
"""


def ok(busd: BusdProcess, name: str) -> float | None:
    return value(scrape(busd.metrics), "busd_assertion_ok", name=name)


def start_with(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path, text: str = ASSERTIONS
) -> tuple[BusdProcess, Path]:
    path = tmp_path / "assertions.toml"
    path.write_text(text)
    return busd_factory(extra_args=("--assertions", str(path))), path


@pytest.mark.timeout(40)
def test_a_violated_critical_assertion_fails_readyz_and_recovers_when_it_holds(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path, zctx: TrackedContext
) -> None:
    """Traffic breaks a tiny latency bound: ok 0 and /readyz 503 within the window (plus
    one tick); a window without traffic restores ok 1 and /readyz 200."""
    busd, _ = start_with(busd_factory, tmp_path)
    wait_for(lambda: ok(busd, "latency") == 1, what="latency assertion evaluated")
    assert get(busd.metrics, "/readyz")[0] == 200
    pub = dealer(zctx, busd.pub_endpoint)
    publish(pub, 1, "release.slo")
    assert collect(pub, 1)[1]["code"] == "accepted"
    sent = time.monotonic()
    wait_for(lambda: ok(busd, "latency") == 0, timeout=3.0, what="latency violated")
    status, _, body = get(busd.metrics, "/readyz")
    assert status == 503
    assert b"assertion latency violated" in body
    assert time.monotonic() - sent < 3.0
    line = busd.wait_log("assertion violated", assertion="latency")
    assert line["critical"] is True and line["figures"]["p99_latency_ms"] > 0.000001
    m = scrape(busd.metrics)
    assert value(m, "busd_assertion_violations_total", name="latency") == 1
    assert value(m, "busd_ready") == 0
    wait_for(lambda: ok(busd, "latency") == 1, timeout=5.0, what="latency holds again")
    assert get(busd.metrics, "/readyz")[0] == 200
    busd.wait_log("assertion holds", assertion="latency")
    pub.close()


@pytest.mark.timeout(40)
def test_an_assertion_on_connections_follows_a_publisher_connecting_and_leaving(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path, zctx: TrackedContext
) -> None:
    """publishers_connected >= 1: violated with none, holds with a DEALER, violated after
    it closes. Not critical, so /readyz stays 200 throughout."""
    busd, _ = start_with(busd_factory, tmp_path)
    wait_for(lambda: ok(busd, "publishers") == 0, what="no publisher: violated")
    pub = dealer(zctx, busd.pub_endpoint)
    wait_for(lambda: ok(busd, "publishers") == 1, timeout=4.0, what="publisher: holds")
    assert get(busd.metrics, "/readyz")[0] == 200
    pub.close()
    wait_for(lambda: ok(busd, "publishers") == 0, timeout=4.0, what="publisher gone: violated")
    assert get(busd.metrics, "/readyz")[0] == 200
    changes = [
        (line["event"], line["assertion"])
        for line in busd.logs()
        if line.get("assertion") == "publishers"
    ]
    assert changes == [
        ("assertion violated", "publishers"),
        ("assertion holds", "publishers"),
        ("assertion violated", "publishers"),
    ]


@pytest.mark.timeout(30)
def test_sighup_reloads_the_assertions_file_and_a_broken_one_keeps_the_previous_set(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    busd, path = start_with(busd_factory, tmp_path)
    path.write_text(ASSERTIONS + '\n[assertions.quiet]\nexpr = "reject_ratio < 0.5"\n')
    busd.signal(signal.SIGHUP)
    wait_for(lambda: ok(busd, "quiet") == 1, what="new assertion exported")
    path.write_text('[assertions.broken]\nexpr = "p99_latency_ms <"\n')
    busd.signal(signal.SIGHUP)
    line = busd.wait_log("assertions not reloaded; keeping the previous set")
    assert "assertions.broken.expr" in line["error"]
    # The set in force is unchanged:
    assert ok(busd, "quiet") == 1 and ok(busd, "broken") is None


@pytest.mark.timeout(30)
def test_a_broken_assertions_file_stops_start_up_with_the_reason(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[assertions.latency]\nexpr = "p99_latency < 50"\n')
    busd = busd_factory(start=False, extra_args=("--assertions", str(path)))
    with open(busd.log_path, "ab") as log:
        proc = subprocess.run(
            busd.argv(), stdout=log, stderr=log, cwd=busd.root, timeout=15, check=False
        )
    assert proc.returncode != 0
    errors = [
        line["error"]
        for line in busd.logs(since_start=False)
        if line.get("event") == "startup failed"
    ]
    assert errors and "assertions.latency.expr" in errors[0]
    assert "unknown figure 'p99_latency'" in errors[0]
