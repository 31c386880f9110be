"""Prometheus exposition of busd's plain-int statistics, built only at scrape time.

The hot path never touches prometheus-client: the broker and the monitors keep plain ints
(``BrokerStats``, ``ConnectionStats``), and ``StatsCollector.collect`` turns one
``App.statistics()`` snapshot into metric families when Prometheus scrapes. Everything goes
to a private ``CollectorRegistry`` (no global default registry, no import-time side effects).

Label cardinality is bounded by construction: labels are rejection codes, roles, supervised
task names, schema names and versions (loaded ones only), operator-defined rate keys and
assertion names; never a topic or a publisher.

Sections of ``App.statistics()`` beyond the core ones are exported by the exporters in
``busd.ops.metric_sections`` (the hook for new sections: ``register_section``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import HistogramMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.utils import floatToGoString

from busd.logs import RateLimitedLog, get
from busd.ops.build import versions
from busd.ops.figures import histogram
from busd.ops.metric_sections import SECTION_EXPORTERS, Families, SectionExporter, generic, num
from busd_protocol.codes import Code

__all__ = ["CONTENT_TYPE", "StatsCollector", "make_registry", "render"]

_log = get("metrics")
_limited = RateLimitedLog(_log)
_CORE = frozenset({"broker", "ingress", "egress", "restarts", "draining"})
ROLES = {"ingress": "publisher", "egress": "subscriber"}
# The classic text format: understood by every Prometheus and promtool version.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _core(stats: Mapping[str, Any], ready: bool, out: Families) -> None:
    broker: Mapping[str, Any] = stats.get("broker") or {}
    simple = (
        (
            "received",
            "busd_messages_received_total",
            "Messages read from publishers (every one is answered).",
        ),
        (
            "accepted",
            "busd_messages_accepted_total",
            "Messages accepted: checked and forwarded to subscribers.",
        ),
        (
            "bytes_in",
            "busd_received_bytes_total",
            "Envelope bytes of messages read with a readable header.",
        ),
        (
            "bytes_accepted",
            "busd_accepted_bytes_total",
            "Envelope bytes of accepted messages (forwarded once to libzmq's fan-out).",
        ),
        ("replies_sent", "busd_replies_sent_total", "Reply frames sent to publishers."),
        (
            "replies_dropped",
            "busd_replies_dropped_total",
            "Replies dropped: publisher gone or not reading its replies (at its HWM).",
        ),
        ("batches", "busd_batches_total", "Broker wake-ups that handled at least one message."),
        (
            "subscribe_total",
            "busd_subscribe_requests_total",
            "Subscription messages read from the XPUB socket.",
        ),
        (
            "unsubscribe_total",
            "busd_unsubscribe_requests_total",
            "Unsubscription messages read from the XPUB socket.",
        ),
        (
            "subscriptions_denied",
            "busd_subscriptions_denied_total",
            "Subscription requests denied (never applied): over max_subscriptions or a "
            "prefix longer than any topic.",
        ),
        (
            "subscribers_cut",
            "busd_subscribers_cut_total",
            "Subscriber connections closed for holding too many denied prefixes.",
        ),
        (
            "frames_discarded",
            "busd_frames_discarded_total",
            "Frames past the third of a publish, read and dropped (the message is bad_frame).",
        ),
        (
            "overlong_messages",
            "busd_overlong_messages_total",
            "Messages with more than frame_slice frames, discarded over several wake-ups.",
        ),
    )
    for key, name, doc in simple:
        out.counter(name, doc).add_metric([], num(broker.get(key)) or 0.0)
    rejected = out.counter(
        "busd_messages_rejected_total", "Messages rejected, by stable rejection code.", ("code",)
    )
    counts: Mapping[str, int] = broker.get("rejected") or {}
    for code in Code:
        rejected.add_metric([str(code)], float(counts.get(str(code), 0)))
    out.gauge(
        "busd_active_subscriptions",
        "Active subscriptions (distinct topic prefixes) on the egress socket.",
    ).add_metric([], num(broker.get("subscriptions")) or 0.0)

    latency = histogram(broker.get("latency"))
    if latency is not None:
        family = HistogramMetricFamily(
            "busd_processing_latency_seconds",
            "Time from reading a message to handing it to subscribers (per batch, an "
            "upper bound per message).",
        )
        cumulative, buckets = 0, []
        for bound, count in zip(latency.bounds, latency.counts, strict=False):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        buckets.append(("+Inf", float(latency.total)))
        family.add_metric([], buckets, latency.sum)
        out.add(family)

    opened = out.counter(
        "busd_connections_accepted_total", "Connections accepted, by role.", ("role",)
    )
    closed = out.counter("busd_disconnections_total", "Connections closed, by role.", ("role",))
    failed = out.counter(
        "busd_handshake_failures_total",
        "Connections that failed the ZMTP handshake, by role.",
        ("role",),
    )
    for section, role in ROLES.items():
        conn: Mapping[str, Any] = stats.get(section) or {}
        opened.add_metric([role], num(conn.get("accepted")) or 0.0)
        closed.add_metric([role], num(conn.get("disconnected")) or 0.0)
        failed.add_metric([role], num(conn.get("handshake_failures")) or 0.0)
    out.gauge("busd_publishers_connected", "Open publisher (ingress) connections.").add_metric(
        [], num((stats.get("ingress") or {}).get("connected")) or 0.0
    )
    out.gauge("busd_subscribers_connected", "Open subscriber (egress) connections.").add_metric(
        [], num((stats.get("egress") or {}).get("connected")) or 0.0
    )

    restarts = out.counter(
        "busd_task_restarts_total", "Restarts of supervised peripheral tasks, by task.", ("task",)
    )
    for task, count in sorted((stats.get("restarts") or {}).items()):
        restarts.add_metric([str(task)], float(count))
    out.gauge("busd_draining", "1 while busd drains for shutdown.").add_metric(
        [], 1.0 if stats.get("draining") else 0.0
    )
    out.gauge("busd_ready", "1 when /readyz answers 200.").add_metric([], 1.0 if ready else 0.0)
    info = InfoMetricFamily(
        "busd_build", "busd build information and the versions it runs with.", value=versions()
    )
    out.add(info)


class StatsCollector:
    """A prometheus-client collector reading ``statistics()`` once per scrape."""

    def __init__(
        self,
        statistics: Callable[[], Mapping[str, Any]],
        ready: Callable[[], bool] = lambda: True,
        exporters: Mapping[str, SectionExporter] = SECTION_EXPORTERS,
    ):
        self._statistics = statistics
        self._ready = ready
        self._exporters = exporters

    def collect(self) -> Iterator[Metric]:
        stats = self._statistics()
        out = Families()
        _core(stats, self._ready(), out)
        for section, data in stats.items():
            if section in _CORE:
                continue
            # A broken exporter costs its own section, never the whole scrape.
            try:
                exporter = self._exporters.get(section)
                if exporter is not None:
                    exporter(data, out)
                else:
                    generic(section, data, out)
            except Exception as exc:
                _limited.warning(
                    f"section.{section}",
                    "metrics section export failed",
                    section=section,
                    error=repr(exc),
                )
        yield from out.items.values()


def make_registry(
    statistics: Callable[[], Mapping[str, Any]],
    ready: Callable[[], bool] = lambda: True,
    process: bool = True,
) -> CollectorRegistry:
    """A private registry with busd's collector (and the standard process_* metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(statistics, ready))
    if process:
        ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (``CONTENT_TYPE``)."""
    return generate_latest(registry)
