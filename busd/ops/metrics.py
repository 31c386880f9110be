"""Prometheus exposition of busd's statistics, built only at scrape time.

The hot path never touches prometheus-client: the broker and the monitors keep plain ints
(``BrokerStats``, ``ConnectionStats``), and ``StatsCollector.collect`` reads one
``App.statistics()`` snapshot when Prometheus scrapes and turns it into the families that
``busd.ops.metric_families.FAMILIES`` declares. Everything goes to a private
``CollectorRegistry`` (no global default registry, no import-time side effects).

Error handling: a family whose reader raises (a bug) is left out of that scrape and logged at
a limited rate with its error; the other families and the scrape go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.utils import floatToGoString

from busd.logs import RateLimitedLog, get
from busd.ops.metric_families import FAMILIES, Family, Samples, Scrape
from busd.statistics import Statistics
from busd_protocol.histogram import HistogramSnapshot

__all__ = ["CONTENT_TYPE", "StatsCollector", "make_registry", "render"]

_log = get("metrics")
_limited = RateLimitedLog(_log)
# The classic text format: understood by every Prometheus and promtool version.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def build(family: Family, samples: Samples) -> Metric:
    """One prometheus-client family from a declared family and its samples."""
    name, labels = family.name, list(family.labels)
    metric: Metric
    if family.type == "counter":
        metric = CounterMetricFamily(name, family.help, labels=labels, unit=family.unit)
    elif family.type == "gauge":
        metric = GaugeMetricFamily(name, family.help, labels=labels, unit=family.unit)
    elif family.type == "histogram":
        metric = HistogramMetricFamily(name, family.help, labels=labels, unit=family.unit)
    else:
        metric = InfoMetricFamily(name.removesuffix("_info"), family.help)
    for values, value in samples:
        if isinstance(value, HistogramSnapshot):
            assert isinstance(metric, HistogramMetricFamily)
            metric.add_metric(list(values), _buckets(value), value.sum)
        elif isinstance(metric, InfoMetricFamily):
            metric.add_metric([], dict(zip(family.labels, values, strict=True)))
        else:
            assert isinstance(metric, CounterMetricFamily | GaugeMetricFamily)
            metric.add_metric(list(values), value)
    return metric


def _buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    cumulative, buckets = 0, []
    for bound, count in zip(snapshot.bounds, snapshot.counts, strict=False):
        cumulative += count
        buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
    buckets.append(("+Inf", float(snapshot.total)))
    return buckets


class StatsCollector:
    """A prometheus-client collector reading ``statistics()`` once per scrape."""

    def __init__(
        self,
        statistics: Callable[[], Statistics],
        ready: Callable[[], bool] = lambda: True,
        families: tuple[Family, ...] = FAMILIES,
    ):
        self._statistics = statistics
        self._ready = ready
        self._families = families

    def collect(self) -> Iterator[Metric]:
        scrape = Scrape(self._statistics(), self._ready())
        for family in self._families:
            try:
                samples = family.read(scrape)
                metric = None if samples is None else build(family, samples)
            except Exception as exc:
                _limited.warning(
                    f"family.{family.name}",
                    "metric family export failed",
                    family=family.name,
                    error=repr(exc),
                )
                continue
            if metric is not None:
                yield metric


def make_registry(
    statistics: Callable[[], Statistics],
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
