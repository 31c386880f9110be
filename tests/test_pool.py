"""A pool of three brokers: publishers fail over, subscribers deduplicate, nothing is lost.

Real busd processes on loopback; the pool clients from busd_client. Each scenario prints
its figures (run with -s): messages, duplicates suppressed, longest delivery pause.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BusdProcess, wait_for
from opshttp import get, scrape
from poolload import PublisherThread, SubscriberThread, delivered_all, verdict
from test_pool_ops import SUPERVISOR, Supervised, _ready, write_pool

import busd_client

WARMUP = ("--warmup", "1.5")
RATE = 1500.0  # messages per second per publisher
# Publishers send until the scenario is over (its `during` returned); this only bounds a
# scenario that never ends (60 s of traffic).
MAX_COUNT = 90_000


def start_pool(busd_factory: Callable[..., BusdProcess], n: int = 3) -> list[BusdProcess]:
    return [busd_factory(name=f"b{k}", extra_args=WARMUP) for k in range(n)]


def subscribed(brokers: list[BusdProcess], subs: int) -> bool:
    for b in brokers:
        found = scrape(b.metrics).get(("busd_subscribers_connected", ()), 0.0)
        if found < subs:
            return False
    return True


def accepted_by(b: BusdProcess) -> float:
    return scrape(b.metrics).get(("busd_messages_accepted_total", ()), 0.0)


def run_traffic(
    brokers: list[BusdProcess], during: Callable[[list[SubscriberThread]], None]
) -> dict[str, object]:
    """Two publishers and two subscribers on every broker while ``during`` runs: traffic
    starts before it and stops once it returned (sized by the scenario, not by a clock).
    Every message a publisher was told was accepted reached each subscriber exactly once."""
    pubs_at = [b.pub_endpoint for b in brokers]
    subs = [SubscriberThread([b.sub_endpoint for b in brokers]) for _ in range(2)]
    for s in subs:
        s.start()
        assert s.ready.wait(5)
    wait_for(lambda: subscribed(brokers, 2), timeout=10, what="both subscribers on every broker")
    wait_for(
        lambda: all(get(b.metrics, "/readyz")[0] == 200 for b in brokers),
        timeout=10,
        what="every broker past its warm-up",
    )
    over = threading.Event()
    pubs = [
        PublisherThread(
            pubs_at, f"pub{k}", MAX_COUNT, RATE, until=over, timeout=30.0, attempt_timeout=0.5
        )
        for k in range(2)
    ]
    for p in pubs:
        p.start()
    try:
        try:
            during(subs)
        finally:
            over.set()
        for p in pubs:
            p.join(60)
            assert not p.is_alive(), "publisher did not finish"
        accepted = {i for p in pubs for i in p.accepted}
        wait_for(
            lambda: delivered_all(accepted, subs) or any(s.error for s in subs),
            timeout=15,
            what="every accepted message at every subscriber",
        )
    finally:
        for s in subs:
            s.stop.set()
        for s in subs:
            s.join(10)
    figures = verdict(pubs, subs)
    print("\npool figures:", json.dumps(figures))
    assert figures["failed"] == 0, [f for p in pubs for f in p.failures][:5]
    assert figures["accepted"] == figures["published"] > 0
    assert all(p.sent < MAX_COUNT for p in pubs), "the scenario outlasted its traffic"
    for k in range(len(subs)):
        sub = figures[f"sub{k}"]
        assert isinstance(sub, dict)
        assert sub["missing"] == 0 and sub["duplicates_delivered"] == 0, sub
    return figures


@pytest.mark.timeout(90)
def test_kill_9_of_one_broker_loses_nothing_and_it_is_used_again(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """One broker killed with -9 mid-stream and restarted: every accepted message reaches
    each subscriber exactly once, no publish fails, the restarted broker takes traffic."""
    brokers = start_pool(busd_factory)
    victim = brokers[1]
    kills = 0

    def kill_and_restart(subs: list[SubscriberThread]) -> None:
        nonlocal kills
        wait_for(
            lambda: min(len(s.ids) for s in subs) >= 3000,
            timeout=20,
            what="traffic before the kill",
        )
        victim.kill()
        kills += 1
        seen = min(len(s.ids) for s in subs)
        wait_for(
            lambda: min(len(s.ids) for s in subs) >= seen + 1500,
            timeout=20,
            what="traffic carrying on without the killed broker",
        )
        victim.start()
        wait_for(
            lambda: get(victim.metrics, "/readyz")[0] == 200,
            timeout=10,
            what="the restarted broker ready",
        )
        wait_for(
            lambda: accepted_by(victim) > 100,
            timeout=10,
            what="publishers using the restarted broker again",
        )

    run_traffic(brokers, kill_and_restart)
    print(f"kills: {kills}")
    assert kills == 1


ROLLING_RESTART = Path(__file__).resolve().parents[1] / "deploy" / "rolling-restart"
# What a unit's restart does, as the pool file's `restart` command: SIGTERM busd and return
# once it is gone (the supervisor, like systemd's Restart=always, starts a new one).
RESTART = (
    "pid=$(cat {pidfile}); kill -TERM $pid; while kill -0 $pid 2>/dev/null; do sleep 0.02; done"
)


@pytest.mark.timeout(90)
def test_rolling_restart_under_load_loses_nothing(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """deploy/rolling-restart restarts each broker in turn, the next only once the last is
    ready: every accepted message reaches each subscriber exactly once, no publish fails."""
    script = tmp_path / "supervise.py"
    script.write_text(SUPERVISOR)
    units = [
        Supervised(busd_factory(name=f"b{k}", extra_args=WARMUP, start=False), script)
        for k in range(3)
    ]
    try:
        for u in units:
            wait_for(
                lambda: u.pidfile.exists() and _ready(u.busd.metrics),  # noqa: B023
                timeout=15,
                what=f"{u.name} ready",
            )
        brokers = [u.busd for u in units]
        pool = write_pool(
            tmp_path / "pool.toml",
            brokers,
            {u.name: RESTART.format(pidfile=u.pidfile) for u in units},
        )
        before = [u.pid() for u in units]
        took: list[float] = []
        progress: list[str] = []

        def rolling(subs: list[SubscriberThread]) -> None:
            wait_for(
                lambda: min(len(s.ids) for s in subs) >= 2000,
                timeout=20,
                what="traffic before the restarts",
            )
            began = time.monotonic()
            done = subprocess.run(
                [str(ROLLING_RESTART), str(pool), "--ready-timeout", "15"],
                # Not whatever busctl/busdctl is on PATH: the checkout's own, found by itself.
                env={**os.environ, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            took.append(time.monotonic() - began)
            assert done.returncode == 0, done.stderr
            progress.append(done.stdout)
            # Traffic goes on until every broker's new process has carried messages.
            wait_for(
                lambda: all(accepted_by(b) >= 100 for b in brokers),
                timeout=20,
                what="every restarted broker carrying traffic",
            )

        run_traffic(brokers, rolling)
        print(f"rolling restart of 3 brokers under load: {took[0]:.1f} s")
        print(progress[0])
        for u in units:  # one line per state, not one per step of the warm-up countdown
            lines = [x for x in progress[0].splitlines() if x.startswith(f"{u.name}: ")]
            assert sum("warming up" in x for x in lines) <= 1, lines
            assert any(x.startswith(f"{u.name}: ready ") for x in lines), lines
        assert all(u.pid() != pid for u, pid in zip(units, before, strict=True))
    finally:
        for u in units:
            u.stop()


@pytest.mark.timeout(60)
def test_all_brokers_down_publishers_wait_or_time_out_as_chosen(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """With every broker down no message is reported accepted: a publisher without a timeout
    waits and succeeds once a broker is back; one with a timeout fails with PublishTimeout."""
    brokers = start_pool(busd_factory, 2)
    endpoints = [b.pub_endpoint for b in brokers]
    sub = SubscriberThread([b.sub_endpoint for b in brokers])
    sub.start()
    assert sub.ready.wait(5)
    try:
        wait_for(lambda: subscribed(brokers, 1), timeout=10, what="subscriber connected")
        with (
            busd_client.PoolPublisher(endpoints, timeout=None, attempt_timeout=0.3) as waiting,
            busd_client.PoolPublisher(
                endpoints, timeout=1.0, attempt_timeout=0.3, window=5
            ) as hasty,
        ):
            waiting.publish_wait("release.load", "release", 2, _release())  # warm-up over
            for b in brokers:
                b.kill()
            wait_for(
                lambda: all(x["state"] == "down" for x in waiting.brokers),
                timeout=5,
                what="the publisher to see every broker down",
            )
            held = [waiting.publish("release.load", "release", 2, _release()) for _ in range(20)]
            with pytest.raises(busd_client.PublishTimeout):
                held[0].result(timeout=1.0)  # still pending: not accepted, not failed
            assert not any(r.done() for r in held)

            doomed = [hasty.publish("release.load", "release", 2, _release()) for _ in range(5)]
            began = time.monotonic()
            doomed.append(hasty.publish("release.load", "release", 2, _release()))
            assert time.monotonic() - began >= 0.5  # blocked: the window was full
            failures = hasty.flush()
            assert len(failures) == 6 and all(
                isinstance(f, busd_client.PublishTimeout) and f.sent is False for f in failures
            )
            assert not any(r.accepted for r in doomed)

            for b in brokers:
                b.start()
            assert waiting.flush(timeout=20) == []
            assert all(r.accepted for r in held)
        # After close the counts stay readable: the warm-up message and the 20 held ones.
        assert sum(x["accepted"] for x in waiting.brokers) == 21
        wanted = {r.id for r in held}
        wait_for(lambda: wanted <= set(sub.ids), timeout=10, what="held messages delivered")
        assert not {r.id for r in doomed} & set(sub.ids)
        assert len(sub.ids) == len(set(sub.ids))
    finally:
        sub.stop.set()
        sub.join(10)
    assert sub.error is None


def _release() -> dict[str, object]:
    return {"slug": "https://apps.example/shop/releases/7", "cmd": "bin/web", "env": {}}
