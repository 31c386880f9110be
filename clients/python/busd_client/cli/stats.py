"""busdctl stats [--json]: busd's figures from its metrics endpoint (``Summary``), and the frame
rendering that ``busdctl top`` (cli/top.py) shares; ``status`` and ``pool`` read ``Summary``
too. Reading the endpoint itself is cli/exposition.py.

They read busd's Prometheus endpoint (``--metrics HOST:PORT``, else found as cli/locate.py
says) over plain HTTP: it is the one interface that carries every counter, works with the
control socket locked down to busd's own user, and needs nothing beyond the standard
library. ``stats`` prints totals since busd started, the state cache's and the snapshot
endpoint's figures among them (``StateFigures``; docs/operations.md §4).

Exit status: 0 done, 2 a configuration file that cannot be read, 3 busd's metrics endpoint
could not be reached or read (or busd serves none).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from busd_client.cli import locate
from busd_client.cli.common import add_json, add_metrics, fail
from busd_client.cli.exits import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from busd_client.cli.exposition import (
    Samples,
    delta_buckets,
    fmt_bytes,
    fmt_ms,
    histogram,
    quantile_ms,
    reason,
    scrape,
)

__all__ = ["StateFigures", "Summary", "metrics_address", "read_summary", "register", "render_frame"]
_CLEAR = "\x1b[H\x1b[2J"


@dataclass
class StateFigures:
    """The state cache and the snapshot endpoint (docs/operations.md §11), from one scrape."""

    entries: float = 0.0  # keys held now
    bytes: float = 0.0  # topic + envelope bytes held now
    evicted: dict[str, float] = field(default_factory=dict)  # by reason: bound, ttl
    ended: float = 0.0  # entries removed by a message that ends them
    requests: dict[str, float] = field(default_factory=dict)  # snapshots by outcome
    active: float = 0.0  # snapshots parked or being sent now
    duration: list[tuple[float, float]] = field(default_factory=list)  # (le s, cumulative)

    @classmethod
    def of(cls, samples: Samples) -> StateFigures | None:
        """None when busd exports no state figures (a busd older than the state cache)."""
        if "busd_state_entries" not in samples:
            return None

        def one(name: str) -> float:
            return (samples.get(name) or [({}, 0.0)])[0][1]

        def by(name: str, label: str) -> dict[str, float]:
            return {labels.get(label, ""): v for labels, v in samples.get(name, [])}

        return cls(
            entries=one("busd_state_entries"),
            bytes=one("busd_state_bytes"),
            evicted=by("busd_state_evictions_total", "reason"),
            ended=one("busd_state_ended_total"),
            requests=by("busd_snapshot_requests_total", "outcome"),
            active=one("busd_snapshots_active"),
            duration=histogram(samples, "busd_snapshot_duration_seconds"),
        )

    @classmethod
    def total(cls, parts: list[StateFigures]) -> StateFigures:
        """Summed over brokers (a key held by two brokers counts twice: each holds its own);
        the durations from the merged histogram (every busd uses the same buckets)."""
        evicted: Counter[str] = Counter()
        requests: Counter[str] = Counter()
        buckets: Counter[float] = Counter()
        for part in parts:
            evicted.update(part.evicted)
            requests.update(part.requests)
            buckets.update(dict(part.duration))
        return cls(
            entries=sum(p.entries for p in parts),
            bytes=sum(p.bytes for p in parts),
            evicted=dict(evicted),
            ended=sum(p.ended for p in parts),
            requests=dict(requests),
            active=sum(p.active for p in parts),
            duration=sorted(buckets.items()),
        )

    @property
    def failed(self) -> float:
        """Snapshot requests not answered with a whole snapshot (an error, or abandoned)."""
        return sum(n for outcome, n in self.requests.items() if outcome != "ok")

    def as_dict(self) -> dict[str, Any]:
        """Counts as ints, for the ``state`` object of `busdctl stats --json`."""
        return {
            "entries": int(self.entries),
            "bytes": int(self.bytes),
            "evicted": {k: int(v) for k, v in sorted(self.evicted.items())},
            "ended": int(self.ended),
            "snapshots": {
                "requests": {k: int(v) for k, v in sorted(self.requests.items())},
                "active": int(self.active),
                "duration_ms": {
                    "p50": quantile_ms(self.duration, 0.5),
                    "p99": quantile_ms(self.duration, 0.99),
                },
            },
        }

    def rows(self) -> list[str]:
        """Its lines of a `busdctl stats` / `top` frame (totals since busd started)."""
        p99 = quantile_ms(self.duration, 0.99)
        return [
            f"{'state':14}{'keys':>6} {self.entries:10.0f}   {'held':>4} "
            f"{fmt_bytes(self.bytes):>10}   {'ended':>8} {self.ended:10.0f}",
            f"{'  evicted':14}{'bound':>6} {self.evicted.get('bound', 0.0):10.0f}   "
            f"{'ttl':>4} {self.evicted.get('ttl', 0.0):10.0f}",
            f"{'snapshots':14}{'ok':>6} {self.requests.get('ok', 0.0):10.0f}   {'p99':>4} "
            f"{fmt_ms(p99):>10}   {'failed':>8} {self.failed:10.0f}   active {self.active:.0f}",
        ]


@dataclass
class Summary:
    """The figures busdctl shows, from one scrape."""

    at: float  # monotonic time of the scrape
    version: str = "?"
    ready: bool = False
    draining: bool = False
    started: float = 0.0  # process start, Unix seconds
    received: float = 0.0
    accepted: float = 0.0
    bytes_in: float = 0.0
    bytes_accepted: float = 0.0
    replies_dropped: float = 0.0
    publishers: float = 0.0
    subscribers: float = 0.0
    subscriptions: float = 0.0
    rejected: dict[str, float] = field(default_factory=dict)
    throttled: dict[str, float] = field(default_factory=dict)
    latency: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative)
    assertions: dict[str, bool] = field(default_factory=dict)
    state: StateFigures | None = None  # None: this busd exports no state figures

    @classmethod
    def of(cls, samples: Samples, at: float) -> Summary:
        def one(name: str) -> float:
            values = samples.get(name) or [({}, 0.0)]
            return values[0][1]

        def by(name: str, label: str) -> dict[str, float]:
            return {labels.get(label, ""): v for labels, v in samples.get(name, [])}

        info = (samples.get("busd_build_info") or [({}, 0.0)])[0][0]
        buckets = histogram(samples, "busd_processing_latency_seconds")
        throttled = by("busd_rate_key_throttled_total", "key")
        for key, n in by("busd_rate_key_disabled_total", "key").items():
            throttled[key] = throttled.get(key, 0.0) + n
        return cls(
            at=at,
            version=info.get("version", "?"),
            ready=one("busd_ready") == 1.0,
            draining=one("busd_draining") == 1.0,
            started=one("process_start_time_seconds"),
            received=one("busd_messages_received_total"),
            accepted=one("busd_messages_accepted_total"),
            bytes_in=one("busd_received_bytes_total"),
            bytes_accepted=one("busd_accepted_bytes_total"),
            replies_dropped=one("busd_replies_dropped_total"),
            publishers=one("busd_publishers_connected"),
            subscribers=one("busd_subscribers_connected"),
            subscriptions=one("busd_active_subscriptions"),
            rejected=by("busd_messages_rejected_total", "code"),
            throttled=throttled,
            latency=buckets,
            assertions={k: v == 1.0 for k, v in by("busd_assertion_ok", "name").items()},
            state=StateFigures.of(samples),
        )

    def as_dict(self) -> dict[str, Any]:
        """Counts as ints, for `busdctl stats --json`."""
        return {
            "version": self.version,
            "ready": self.ready,
            "draining": self.draining,
            "received": int(self.received),
            "accepted": int(self.accepted),
            "rejected": {k: int(v) for k, v in sorted(self.rejected.items()) if v},
            "throttled": {k: int(v) for k, v in sorted(self.throttled.items())},
            "bytes_in": int(self.bytes_in),
            "bytes_accepted": int(self.bytes_accepted),
            "replies_dropped": int(self.replies_dropped),
            "publishers_connected": int(self.publishers),
            "subscribers_connected": int(self.subscribers),
            "subscriptions": int(self.subscriptions),
            "latency_ms": {
                "p50": quantile_ms(self.latency, 0.5),
                "p99": quantile_ms(self.latency, 0.99),
            },
            "assertions": self.assertions,
            "state": None if self.state is None else self.state.as_dict(),
        }


def render_frame(
    now: Summary, then: Summary | None, address: str, wall: float | None = None
) -> str:
    """One screen of `busdctl top`: rates over ``then`` -> ``now`` (totals without ``then``)."""
    span = now.at - then.at if then is not None else 0.0
    base = then or Summary(at=now.at)

    def rate(cur: float, old: float) -> str:
        return f"{(cur - old) / span:10.1f}" if span > 0 else f"{'-':>10}"

    def byte_rate(cur: float, old: float) -> str:
        return f"{fmt_bytes((cur - old) / span):>10}" if span > 0 else f"{'-':>10}"

    wall = time.time() if wall is None else wall
    up = max(0, int(wall - now.started)) if now.started else 0
    state = "draining" if now.draining else ("ready" if now.ready else "NOT READY")
    window = delta_buckets(now.latency, base.latency)
    rejected_now, rejected_then = sum(now.rejected.values()), sum(base.rejected.values())
    lines = [
        f"busd {now.version} at {address}   {state}   up {up // 3600:d}:{up // 60 % 60:02d}:"
        f"{up % 60:02d}   " + (f"interval {span:.1f}s" if span > 0 else "totals since start"),
        "",
    ]
    if span > 0:
        lines += [
            f"{'messages/s':14}{'in':>6} {rate(now.received, base.received)}"
            f"   {'out':>4} {rate(now.accepted, base.accepted)}"
            f"   {'rejected':>8} {rate(rejected_now, rejected_then)}",
            f"{'bytes/s':14}{'in':>6} {byte_rate(now.bytes_in, base.bytes_in)}"
            f"   {'out':>4} {byte_rate(now.bytes_accepted, base.bytes_accepted)}",
        ]
    lines += [
        f"{'totals':14}{'in':>6} {now.received:10.0f}   {'out':>4} {now.accepted:10.0f}"
        f"   {'rejected':>8} {rejected_now:10.0f}",
        f"{'latency':14}{'p50':>6} {fmt_ms(quantile_ms(window, 0.5)):>10}"
        f"   {'p99':>4} {fmt_ms(quantile_ms(window, 0.99)):>10}"
        f"   (since start: p99 {fmt_ms(quantile_ms(now.latency, 0.99))})",
        f"{'connections':14}{'pubs':>6} {now.publishers:10.0f}   {'subs':>4} "
        f"{now.subscribers:10.0f}   {'subscriptions':>8} {now.subscriptions:.0f}",
        *(now.state.rows() if now.state is not None else []),
        "",
        f"{'rejects by code':24}{'per s':>10}{'total':>12}",
    ]
    codes = sorted(c for c, n in now.rejected.items() if n)
    lines += [
        f"  {c:22}{rate(now.rejected[c], base.rejected.get(c, 0.0))}{now.rejected[c]:12.0f}"
        for c in codes
    ] or ["  (none)"]
    lines += ["", f"{'throttles by rate key':24}{'per s':>10}{'total':>12}"]
    lines += [
        f"  {k:22}{rate(n, base.throttled.get(k, 0.0))}{n:12.0f}"
        for k, n in sorted(now.throttled.items())
        if n
    ] or ["  (none)"]
    if now.assertions:
        lines += ["", "assertions"]
        lines += [
            f"  {name:22}{'ok' if ok else 'VIOLATED'}"
            for name, ok in sorted(now.assertions.items())
        ]
    return "\n".join(lines) + "\n"


def register(subparsers: Any) -> None:
    stats = subparsers.add_parser(
        "stats",
        help="print busd's counters since start",
        description="Print busd's counters since it started, read from its metrics endpoint.",
    )
    add_metrics(stats)
    add_json(stats)
    stats.set_defaults(func=run_stats)


def metrics_address(args: argparse.Namespace) -> locate.Found | int:
    """The metrics endpoint to read (cli/locate.py), or the exit status after saying why
    there is none to read."""
    try:
        found = locate.metrics(args)
    except locate.LocateError as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)
    if found.value == "off":
        return fail(
            args,
            "unavailable",
            f'busd serves no metrics endpoint (metrics = "off" in {found.source})',
            EXIT_UNREACHABLE,
        )
    return found


def read_summary(found: locate.Found, timeout: float = 5.0) -> Summary:
    """One scrape as a Summary; OSError (with a readable message) when it fails."""
    try:
        return Summary.of(scrape(found.value, timeout), time.monotonic())
    except OSError as exc:
        where = found.value if found.source.startswith("--") else found.where()
        raise OSError(f"cannot read metrics from {where}: {reason(exc)}") from None


def run_stats(args: argparse.Namespace) -> int:
    found = metrics_address(args)
    if isinstance(found, int):
        return found
    try:
        summary = read_summary(found)
    except OSError as exc:
        return fail(args, "unavailable", str(exc), EXIT_UNREACHABLE)
    if args.json:
        print(json.dumps(summary.as_dict(), separators=(",", ":")))
    else:
        sys.stdout.write(render_frame(summary, None, found.value))
    return EXIT_OK
