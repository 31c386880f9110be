"""busd's statistics as frozen values: one type per source, and ``Statistics``, all of them.

The flow: each owner keeps plain-int counters on its own hot path (``BrokerStats``,
``ConnectionStats``, ...) and builds one of these snapshots when asked, with one verb,
``statistics()``. ``App.statistics()`` composes them into one ``Statistics`` value, read
attribute by attribute by the metrics exporter (``busd.ops.metric_families``, which declares
every Prometheus family), the assertions (``busd.ops.figures``) and the control socket's
``stats`` command (``as_json`` below). Optional sections are ``None`` while their subsystem
is not running. A snapshot's mappings are fresh copies, typed read-only (``Mapping``): nothing
the owner does later changes a snapshot already taken.

``as_json`` keeps the control socket's JSON as it has always been: a field's JSON key is its
name unless declared with ``field(metadata=key("..."))``; the members of a
``field(metadata=INLINE)`` sit in its parent's object; a field that defaults to ``None`` (an
optional section) is left out while ``None``.

This module sits between the I/O layers, which build these values, and the kernel, whose own
snapshot types (``BucketRow``, ``SchemaGateStatistics``) it reuses.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from busd.kernel.buckets import BucketRow
from busd.kernel.schemas import SchemaGateStatistics
from busd.kernel.state import StateStatistics
from busd_protocol.codes import Code
from busd_protocol.histogram import HistogramSnapshot

_T = TypeVar("_T")
_KEY = "json_key"
_INLINE = "json_inline"


def key(name: str) -> Mapping[str, object]:
    """``field(metadata=key(name))``: a field whose JSON key is ``name`` (the control
    socket's key, kept as it was)."""
    return MappingProxyType({_KEY: name})


# ``field(metadata=INLINE)``: a field whose members are written into the parent's JSON object.
INLINE: Mapping[str, object] = MappingProxyType({_INLINE: True})


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    """The broker task's counters (``BrokerStats.statistics()``)."""

    received: int
    accepted: int
    bytes_in: int  # envelope bytes of messages with a readable header
    bytes_accepted: int
    rejected: Mapping[Code, int]  # every code, zeros included
    replies_sent: int
    replies_dropped: int
    subscriptions: int  # distinct prefixes applied now
    subscribe_total: int
    unsubscribe_total: int
    batches: int
    latency: HistogramSnapshot  # receive -> forward, seconds
    # The bounds on hostile peers (docs/operations.md §10).
    subscriptions_denied: int = 0  # never applied: over max_subscriptions, too long, forbidden
    subscriptions_forbidden: int = 0  # of those, outside the identity's permissions
    subscribers_cut: int = 0  # subscriber connections closed for insisting on denied prefixes
    frames_discarded: int = 0  # frames past the third of a publish, read and dropped
    overlong_messages: int = 0  # messages discarded over several wake-ups
    publishers_cut: int = 0  # publisher connections closed for not reading their replies
    epoch: int = 0  # the delivery stamp's epoch (random per start; busd_protocol.stamps)
    sequence_topics: int = 0  # topics whose sequence number is held now (bounded)
    sequence_topics_expired: int = 0  # topics forgotten: idle, or past the cap
    fences: int = 0  # (connection, topic) pairs fenced now (kernel/fences.py)
    fenced: int = 0  # messages refused behind an earlier refused one of their topic
    state: StateStatistics | None = None  # the state cache (kernel/state.py)
    snapshots: SnapshotStatistics | None = None  # the state endpoint (transport/snapshots.py)


@dataclass(frozen=True, slots=True)
class SnapshotStatistics:
    """The state endpoint's (``busd.transport.snapshots.Snapshots.statistics()``)."""

    endpoint: str
    requests: Mapping[str, int]  # by outcome: ok, an error code, abandoned; zeros included
    active: int  # snapshots parked or being sent now
    entries_sent: int
    duration: HistogramSnapshot  # request read -> end frame sent, seconds


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """One socket's connections, from its monitor events (``ConnectionStats.statistics()``)."""

    connected: int
    accepted: int
    disconnected: int
    handshakes: int
    handshake_failures: int
    accept_failures: int = 0  # accept(2) failed: EMFILE (the fd limit) and the like


@dataclass(frozen=True, slots=True)
class RatesDirStatistics:
    """The rates directory watcher (``RatesDir.statistics()``)."""

    scans_total: int = field(metadata=key("rates_dir_scans_total"))
    changes_total: int = field(metadata=key("rates_dir_changes_total"))
    errors_total: int = field(metadata=key("rates_dir_errors_total"))  # problems observed
    files_in_error: int = field(metadata=key("rates_dir_errors"))  # problems reported now


@dataclass(frozen=True, slots=True)
class RatesStatistics:
    """The rate table's totals and its directory (``RateControl.statistics()``)."""

    throttled_total: int = field(metadata=key("rate_throttled_total"))
    disabled_total: int = field(metadata=key("rate_disabled_total"))
    keys: int = field(metadata=key("rate_keys"))  # configured now
    directory: RatesDirStatistics = field(metadata=INLINE)


@dataclass(frozen=True, slots=True)
class SchemasStatistics:
    """The schema gate's traffic and the reloads (``SchemaControl.statistics()``)."""

    gate: SchemaGateStatistics = field(metadata=INLINE)
    reloads: int = field(metadata=key("reloads"))
    reload_failures: int = field(metadata=key("reload_failures"))


@dataclass(frozen=True, slots=True)
class ControlStatistics:
    """The control socket (``ControlServer.statistics()``)."""

    connections_total: int = field(metadata=key("control_connections_total"))
    connections_refused_total: int = field(metadata=key("control_connections_refused_total"))
    connections_open: int = field(metadata=key("control_connections"))
    requests_total: int = field(metadata=key("control_requests_total"))
    errors_total: int = field(metadata=key("control_errors_total"))
    internal_errors_total: int = field(metadata=key("control_internal_errors_total"))
    connections_evicted_total: int = field(
        default=0, metadata=key("control_connections_evicted_total")
    )


@dataclass(frozen=True, slots=True)
class AssertionStatistics:
    """One service-level assertion (``AssertionMonitor.statistics()`` maps names to these)."""

    ok: bool | None  # None until first evaluated
    critical: bool
    violations: int
    expr: str
    window_s: float


@dataclass(frozen=True, slots=True)
class HttpStatistics:
    """The metrics port (``MetricsServer.statistics()``)."""

    requests_total: int = field(metadata=key("http_requests_total"))
    connections_refused_total: int = field(metadata=key("http_connections_refused_total"))
    connections_evicted_total: int = field(
        default=0, metadata=key("http_connections_evicted_total")
    )


@dataclass(frozen=True, slots=True)
class NotifyStatistics:
    """sd_notify datagrams (``Notifier.statistics()``; only under systemd)."""

    sent_total: int = field(metadata=key("notify_sent_total"))
    failed_total: int = field(metadata=key("notify_failed_total"))


@dataclass(frozen=True, slots=True)
class TrustStatistics:
    """The keys directory and permissions file (``TrustControl.statistics()``; only with
    authentication on)."""

    enabled: bool
    identities: int  # keys known
    reloads: int
    reload_failures: int
    last_error: str


@dataclass(frozen=True, slots=True)
class ZapStatistics:
    """The ZAP handler judging each CURVE handshake (``ZapHandler.statistics()``)."""

    admitted: int
    denied_unknown_key: int
    requests: int


@dataclass(frozen=True, slots=True)
class Statistics:
    """Every counter of one busd at one moment (``App.statistics()``)."""

    broker: BrokerStatistics
    ingress: ConnectionStatistics  # publishers (ROUTER)
    egress: ConnectionStatistics  # subscribers (XPUB)
    restarts: Mapping[str, int]  # by supervised task
    draining: bool
    schemas: SchemasStatistics | None = None
    rates: RatesStatistics | None = None
    control: ControlStatistics | None = None
    trust: TrustStatistics | None = None
    zap: ZapStatistics | None = None
    rate_keys: tuple[BucketRow, ...] | None = None  # one row per configured rate key
    assertions: Mapping[str, AssertionStatistics] | None = None
    http: HttpStatistics | None = None
    systemd: NotifyStatistics | None = None


@dataclass(slots=True)
class Sources:
    """Where ``App.statistics()`` reads each optional section; set as subsystems start."""

    schemas: Callable[[], SchemasStatistics] | None = None
    rates: Callable[[], RatesStatistics] | None = None
    control: Callable[[], ControlStatistics] | None = None
    trust: Callable[[], TrustStatistics] | None = None
    zap: Callable[[], ZapStatistics] | None = None
    rate_keys: Callable[[], tuple[BucketRow, ...]] | None = None
    assertions: Callable[[], Mapping[str, AssertionStatistics]] | None = None
    http: Callable[[], HttpStatistics] | None = None
    systemd: Callable[[], NotifyStatistics] | None = None

    def read(
        self,
        broker: BrokerStatistics,
        ingress: ConnectionStatistics,
        egress: ConnectionStatistics,
        restarts: Mapping[str, int],
        draining: bool,
    ) -> Statistics:
        """The core sections as given, the optional ones read from their sources now."""
        return Statistics(
            broker,
            ingress,
            egress,
            restarts,
            draining,
            schemas=_read(self.schemas),
            rates=_read(self.rates),
            control=_read(self.control),
            trust=_read(self.trust),
            zap=_read(self.zap),
            rate_keys=_read(self.rate_keys),
            assertions=_read(self.assertions),
            http=_read(self.http),
            systemd=_read(self.systemd),
        )


def _read(source: Callable[[], _T] | None) -> _T | None:
    return None if source is None else source()


# -- the control socket's JSON ------------------------------------------------------------------
def as_json(value: object) -> Any:
    """``value`` (a snapshot, or anything in one) as plain JSON values."""
    if isinstance(value, HistogramSnapshot):
        return {
            "count": value.total,
            "sum_seconds": value.sum,
            "p50_seconds": _finite(value.quantile(0.5)),
            "p99_seconds": _finite(value.quantile(0.99)),
            "p999_seconds": _finite(value.quantile(0.999)),
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        _members(value, out)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(as_json(k)): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, float):
        return _finite(value)
    return value


def _members(value: Any, out: dict[str, Any]) -> None:
    for f in dataclasses.fields(value):
        member = getattr(value, f.name)
        if f.metadata.get(_INLINE):
            _members(member, out)
        elif member is not None or f.default is dataclasses.MISSING:
            out[f.metadata.get(_KEY, f.name)] = as_json(member)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
