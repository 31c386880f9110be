"""Live figures over a window, from two samples of busd's counters (pure: no clock, no I/O).

A ``Sample`` is the handful of numbers the assertions need, taken from the statistics
snapshot (``App.statistics()``) at a monotonic time the caller passes in. ``compute`` turns
an earlier and a later sample into the named figures assertions are written in: rates and
ratios from counter deltas, latency quantiles from the histogram's delta, and connection
gauges as of the later sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from busd_protocol.codes import Code
from busd_protocol.histogram import LATENCY_BUCKETS, HistogramSnapshot

THROTTLE_CODES = (str(Code.RATE_LIMITED), str(Code.DISABLED))
SCHEMA_CODES = tuple(
    str(c)
    for c in (
        Code.UNKNOWN_SCHEMA,
        Code.UNKNOWN_VERSION,
        Code.RETIRED_VERSION,
        Code.SCHEMA_NOT_ALLOWED,
        Code.INVALID,
    )
)

# Name -> meaning; docs/operations.md lists the same table.
FIGURES: dict[str, str] = {
    "p50_latency_ms": "median processing latency (receive -> forward) in the window, ms",
    "p90_latency_ms": "90th percentile processing latency in the window, ms",
    "p99_latency_ms": "99th percentile processing latency in the window, ms",
    "p999_latency_ms": "99.9th percentile processing latency in the window, ms",
    "mean_latency_ms": "mean processing latency in the window, ms",
    "received": "messages read from publishers in the window",
    "accepted": "messages accepted (forwarded) in the window",
    "rejected": "messages rejected (any code) in the window",
    "throttled": "messages refused rate_limited or disabled in the window",
    "receive_rate": "messages read per second over the window",
    "accept_rate": "messages accepted per second over the window",
    "reject_rate": "messages rejected per second over the window",
    "throttle_rate": "messages refused rate_limited or disabled per second",
    "bytes_in_rate": "envelope bytes read per second over the window",
    "bytes_accepted_rate": "envelope bytes accepted per second over the window",
    "reject_ratio": "rejected / received in the window (0 when nothing was received)",
    "throttle_ratio": "(rate_limited + disabled) / received in the window",
    "schema_reject_ratio": "rejects for schema reasons / received in the window",
    "publishers_connected": "open publisher (ingress) connections now",
    "subscribers_connected": "open subscriber (egress) connections now",
    "subscriptions": "active subscriptions (distinct topic prefixes) now",
    "handshake_failures": "failed ZMTP handshakes (both endpoints) in the window",
    "replies_dropped": "replies dropped (publisher gone or not reading) in the window",
    "task_restarts": "supervised task restarts in the window",
    "draining": "1 while busd drains for shutdown, else 0",
    "window_seconds": "the time actually covered by the two samples",
}
_EMPTY_LATENCY = HistogramSnapshot(LATENCY_BUCKETS, (0,) * (len(LATENCY_BUCKETS) + 1), 0, 0.0)


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic seconds
    received: int
    accepted: int
    rejected: int
    throttled: int
    schema_rejected: int
    bytes_in: int
    bytes_accepted: int
    replies_dropped: int
    handshake_failures: int
    restarts: int
    publishers: int
    subscribers: int
    subscriptions: int
    draining: bool
    latency: HistogramSnapshot


def histogram(value: object) -> HistogramSnapshot | None:
    """``value`` if it is a ``HistogramSnapshot`` (statistics never leave the process)."""
    return value if isinstance(value, HistogramSnapshot) else None


def _int(section: Mapping[str, Any], key: str) -> int:
    value = section.get(key, 0)
    return value if isinstance(value, int) else 0


def sample(stats: Mapping[str, Any], at: float) -> Sample:
    """Read a statistics snapshot; missing sections count as zero."""
    broker: Mapping[str, Any] = stats.get("broker") or {}
    ingress: Mapping[str, Any] = stats.get("ingress") or {}
    egress: Mapping[str, Any] = stats.get("egress") or {}
    rejected: Mapping[str, int] = broker.get("rejected") or {}
    restarts: Mapping[str, int] = stats.get("restarts") or {}
    return Sample(
        at=at,
        received=_int(broker, "received"),
        accepted=_int(broker, "accepted"),
        rejected=sum(rejected.values()),
        throttled=sum(rejected.get(c, 0) for c in THROTTLE_CODES),
        schema_rejected=sum(rejected.get(c, 0) for c in SCHEMA_CODES),
        bytes_in=_int(broker, "bytes_in"),
        bytes_accepted=_int(broker, "bytes_accepted"),
        replies_dropped=_int(broker, "replies_dropped"),
        handshake_failures=(
            _int(ingress, "handshake_failures") + _int(egress, "handshake_failures")
        ),
        restarts=sum(restarts.values()),
        publishers=_int(ingress, "connected"),
        subscribers=_int(egress, "connected"),
        subscriptions=_int(broker, "subscriptions"),
        draining=bool(stats.get("draining")),
        latency=histogram(broker.get("latency")) or _EMPTY_LATENCY,
    )


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def compute(now: Sample, then: Sample) -> dict[str, float]:
    """Every figure in ``FIGURES`` for the interval ``then`` -> ``now``."""
    span = now.at - then.at
    per_second = 1.0 / span if span > 0 else 0.0
    latency = (
        now.latency.minus(then.latency)
        if len(now.latency.counts) == len(then.latency.counts)
        else now.latency
    )
    received = now.received - then.received
    accepted = now.accepted - then.accepted
    rejected = now.rejected - then.rejected
    throttled = now.throttled - then.throttled
    mean = latency.sum / latency.total if latency.total else 0.0
    return {
        "p50_latency_ms": latency.quantile(0.5) * 1000.0,
        "p90_latency_ms": latency.quantile(0.9) * 1000.0,
        "p99_latency_ms": latency.quantile(0.99) * 1000.0,
        "p999_latency_ms": latency.quantile(0.999) * 1000.0,
        "mean_latency_ms": mean * 1000.0,
        "received": float(received),
        "accepted": float(accepted),
        "rejected": float(rejected),
        "throttled": float(throttled),
        "receive_rate": received * per_second,
        "accept_rate": accepted * per_second,
        "reject_rate": rejected * per_second,
        "throttle_rate": throttled * per_second,
        "bytes_in_rate": (now.bytes_in - then.bytes_in) * per_second,
        "bytes_accepted_rate": (now.bytes_accepted - then.bytes_accepted) * per_second,
        "reject_ratio": _ratio(rejected, received),
        "throttle_ratio": _ratio(throttled, received),
        "schema_reject_ratio": _ratio(now.schema_rejected - then.schema_rejected, received),
        "publishers_connected": float(now.publishers),
        "subscribers_connected": float(now.subscribers),
        "subscriptions": float(now.subscriptions),
        "handshake_failures": float(now.handshake_failures - then.handshake_failures),
        "replies_dropped": float(now.replies_dropped - then.replies_dropped),
        "task_restarts": float(now.restarts - then.restarts),
        "draining": 1.0 if now.draining else 0.0,
        "window_seconds": max(0.0, span),
    }
