"""Traffic for pool tests: publisher and subscriber threads that record every message's fate.

Each thread owns its client for its whole life (zmq sockets are not shared between threads).
The verdict functions compare what publishers were told was accepted with what each
subscriber delivered, and return the figures the tests print.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

import busd_client

RELEASE = {
    "slug": "https://apps.example/shop/releases/1",
    "cmd": "bin/web",
    "env": {"RACK_ENV": "production"},
}
TOPIC = "release.load"


class SubscriberThread(threading.Thread):
    """A PoolSubscriber on ``endpoints`` recording (id, arrival time) of load messages."""

    def __init__(self, endpoints: Sequence[str], **options: Any) -> None:
        super().__init__(daemon=True)
        self.endpoints = list(endpoints)
        self.options = options
        self.ids: list[str] = []
        self.arrivals: list[float] = []
        self.latencies: list[float] = []
        self.duplicates = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with busd_client.PoolSubscriber(self.endpoints, "release.", **self.options) as sub:
                self.ready.set()
                while not self.stop.is_set():
                    message = sub.recv(timeout=0.05)
                    if message is not None and message.topic == TOPIC:
                        now = time.monotonic()
                        self.ids.append(message.id)
                        self.arrivals.append(now)
                        self.latencies.append(time.time_ns() / 1e9 - message.ts / 1e9)
                    self.duplicates = sub.duplicates
        except BaseException as exc:  # reported by the test thread
            self.error = exc
            self.ready.set()

    def longest_gap(self) -> float:
        """The longest time between two consecutive deliveries (the delivery pause)."""
        times = self.arrivals
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class PublisherThread(threading.Thread):
    """A PoolPublisher sending messages at about ``rate`` per second: ``count`` of them, or,
    given ``until``, until that event is set (``count`` is then only an upper bound), so a
    scenario's traffic lasts as long as the scenario does, however slow the machine."""

    def __init__(
        self,
        endpoints: Sequence[str],
        name: str,
        count: int,
        rate: float,
        until: threading.Event | None = None,
        **options: Any,
    ) -> None:
        super().__init__(daemon=True)
        self.endpoints = list(endpoints)
        self.name_ = name
        self.count = count
        self.rate = rate
        self.until = until
        self.options = options
        self.published: list[str] = []
        self.accepted: list[str] = []
        self.failures: list[BaseException] = []
        self.stats: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.sent = 0  # progress, read by the test thread

    def run(self) -> None:
        try:
            with busd_client.PoolPublisher(self.endpoints, name=self.name_, **self.options) as pub:
                receipts = []
                started = time.monotonic()
                for i in range(self.count):
                    if self.until is not None and self.until.is_set():
                        break
                    receipts.append(pub.publish(TOPIC, "release", 2, RELEASE))
                    self.sent = i + 1
                    ahead = started + (i + 1) / self.rate - time.monotonic()
                    if ahead > 0.005:
                        time.sleep(ahead)  # pacing the offered load, not synchronisation
                self.failures.extend(pub.flush())
                self.published = [r.id for r in receipts]
                self.accepted = [r.id for r in receipts if r.accepted]
                self.stats = pub.statistics()
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def verdict(
    publishers: Sequence[PublisherThread], subscribers: Sequence[SubscriberThread]
) -> dict[str, Any]:
    """Every accepted message delivered exactly once to every subscriber; the figures."""
    threads: list[PublisherThread | SubscriberThread] = [*publishers, *subscribers]
    for t in threads:
        assert t.error is None, f"{t.name}: {t.error!r}"
    accepted = {i for p in publishers for i in p.accepted}
    published = {i for p in publishers for i in p.published}
    failures = [f for p in publishers for f in p.failures]
    figures: dict[str, Any] = {
        "published": len(published),
        "accepted": len(accepted),
        "failed": len(failures),
        "resent": sum(p.stats.get("resent", 0) for p in publishers),
        "late_accepts": sum(p.stats.get("late_accepts", 0) for p in publishers),
    }
    for k, s in enumerate(subscribers):
        got = s.ids
        missing = accepted - set(got)
        figures[f"sub{k}"] = {
            "delivered": len(got),
            "duplicates_suppressed": s.duplicates,
            "duplicates_delivered": len(got) - len(set(got)),
            "missing": len(missing),
            "longest_pause_ms": round(s.longest_gap() * 1000, 1),
            "max_latency_ms": round(max(s.latencies, default=0.0) * 1000, 1),
            "p99_latency_ms": round(sorted(s.latencies)[int(len(s.latencies) * 0.99)] * 1000, 1)
            if s.latencies
            else 0.0,
            "over_100ms": sum(1 for x in s.latencies if x > 0.1),
        }
    return figures


def delivered_all(accepted: set[str], subscribers: Sequence[SubscriberThread]) -> bool:
    return all(accepted <= set(s.ids) for s in subscribers)
