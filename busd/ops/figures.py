"""Live figures over a window, from two samples of busd's counters (pure: no clock, no I/O).

A ``Sample`` is the handful of numbers the assertions need, read from a ``Statistics``
snapshot (``App.statistics()``) at a monotonic time the caller passes in. ``compute`` turns
an earlier and a later sample into ``Figures``, whose attributes are the names assertions
are written in: rates and ratios from counter deltas, latency quantiles from the histogram's
delta, and connection gauges as of the later sample.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from busd.statistics import Statistics
from busd_protocol.codes import Code
from busd_protocol.histogram import HistogramSnapshot

THROTTLE_CODES = (Code.RATE_LIMITED, Code.DISABLED)
SCHEMA_CODES = (
    Code.UNKNOWN_SCHEMA,
    Code.UNKNOWN_VERSION,
    Code.RETIRED_VERSION,
    Code.SCHEMA_NOT_ALLOWED,
    Code.INVALID,
)


def _figure(meaning: str) -> Any:
    return field(metadata={"meaning": meaning})


@dataclass(frozen=True, slots=True)
class Figures:
    """Every figure over one window; docs/operations.md lists the same table."""

    p50_latency_ms: float = _figure(
        "median processing latency (receive -> forward) in the window, ms"
    )
    p90_latency_ms: float = _figure("90th percentile processing latency in the window, ms")
    p99_latency_ms: float = _figure("99th percentile processing latency in the window, ms")
    p999_latency_ms: float = _figure("99.9th percentile processing latency in the window, ms")
    mean_latency_ms: float = _figure("mean processing latency in the window, ms")
    received: float = _figure("messages read from publishers in the window")
    accepted: float = _figure("messages accepted (forwarded) in the window")
    rejected: float = _figure("messages rejected (any code) in the window")
    throttled: float = _figure("messages refused rate_limited or disabled in the window")
    receive_rate: float = _figure("messages read per second over the window")
    accept_rate: float = _figure("messages accepted per second over the window")
    reject_rate: float = _figure("messages rejected per second over the window")
    throttle_rate: float = _figure("messages refused rate_limited or disabled per second")
    bytes_in_rate: float = _figure("envelope bytes read per second over the window")
    bytes_accepted_rate: float = _figure("envelope bytes accepted per second over the window")
    reject_ratio: float = _figure("rejected / received in the window (0 when nothing was received)")
    throttle_ratio: float = _figure("(rate_limited + disabled) / received in the window")
    schema_reject_ratio: float = _figure("rejects for schema reasons / received in the window")
    publishers_connected: float = _figure("open publisher (ingress) connections now")
    subscribers_connected: float = _figure("open subscriber (egress) connections now")
    subscriptions: float = _figure("active subscriptions (distinct topic prefixes) now")
    handshake_failures: float = _figure("failed ZMTP handshakes (both endpoints) in the window")
    replies_dropped: float = _figure(
        "replies dropped (publisher gone or not reading) in the window"
    )
    task_restarts: float = _figure("supervised task restarts in the window")
    draining: float = _figure("1 while busd drains for shutdown, else 0")
    window_seconds: float = _figure("the time actually covered by the two samples")


# Name -> meaning: the names an assertion may read.
FIGURES: dict[str, str] = {f.name: f.metadata["meaning"] for f in dataclasses.fields(Figures)}


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


def sample(stats: Statistics, at: float) -> Sample:
    """The figures' inputs from one statistics snapshot."""
    broker = stats.broker
    rejected = broker.rejected
    return Sample(
        at=at,
        received=broker.received,
        accepted=broker.accepted,
        rejected=sum(rejected.values()),
        throttled=sum(rejected.get(c, 0) for c in THROTTLE_CODES),
        schema_rejected=sum(rejected.get(c, 0) for c in SCHEMA_CODES),
        bytes_in=broker.bytes_in,
        bytes_accepted=broker.bytes_accepted,
        replies_dropped=broker.replies_dropped,
        handshake_failures=stats.ingress.handshake_failures + stats.egress.handshake_failures,
        restarts=sum(stats.restarts.values()),
        publishers=stats.ingress.connected,
        subscribers=stats.egress.connected,
        subscriptions=broker.subscriptions,
        draining=stats.draining,
        latency=broker.latency,
    )


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def compute(now: Sample, then: Sample) -> Figures:
    """Every figure for the interval ``then`` -> ``now``."""
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
    return Figures(
        p50_latency_ms=latency.quantile(0.5) * 1000.0,
        p90_latency_ms=latency.quantile(0.9) * 1000.0,
        p99_latency_ms=latency.quantile(0.99) * 1000.0,
        p999_latency_ms=latency.quantile(0.999) * 1000.0,
        mean_latency_ms=mean * 1000.0,
        received=float(received),
        accepted=float(accepted),
        rejected=float(rejected),
        throttled=float(throttled),
        receive_rate=received * per_second,
        accept_rate=accepted * per_second,
        reject_rate=rejected * per_second,
        throttle_rate=throttled * per_second,
        bytes_in_rate=(now.bytes_in - then.bytes_in) * per_second,
        bytes_accepted_rate=(now.bytes_accepted - then.bytes_accepted) * per_second,
        reject_ratio=_ratio(rejected, received),
        throttle_ratio=_ratio(throttled, received),
        schema_reject_ratio=_ratio(now.schema_rejected - then.schema_rejected, received),
        publishers_connected=float(now.publishers),
        subscribers_connected=float(now.subscribers),
        subscriptions=float(now.subscriptions),
        handshake_failures=float(now.handshake_failures - then.handshake_failures),
        replies_dropped=float(now.replies_dropped - then.replies_dropped),
        task_restarts=float(now.restarts - then.restarts),
        draining=1.0 if now.draining else 0.0,
        window_seconds=max(0.0, span),
    )
