"""Metric families for the optional sections of ``App.statistics()``.

Each subsystem that adds a section (``app.stats_sources[name] = snapshot_function``) gets an
exporter here, registered by section name in ``SECTION_EXPORTERS``. A section without one is
exported generically when it is a flat map of numbers (see ``generic``). Exporters read
plain values (dicts, lists, numbers) and tolerate missing keys, so a section can grow without
breaking a scrape.

Expected shapes (what the exporters below read):

- ``rates``: ``RateControl.statistics()`` (flat counters), optionally with ``"keys"`` as below;
- ``rate_keys``: a list of ``{"key", "rate", "burst", "tokens", "throttled_total",
  "disabled_total"}`` maps, one per configured rate key (``dataclasses.asdict`` of the
  ``RateTable.snapshot(now)`` rows; ``App._attach_ops`` adds this section);
- ``schemas``: ``SchemaControl.statistics()`` (``SchemaGate.statistics()`` plus reload counts);
- ``assertions``: ``{name: {"ok": bool | None, "critical": bool, "violations": int}}``;
- anything flat (e.g. ``control``: ``ControlServer.statistics()``): generic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_METRIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class Families:
    """The families of one scrape; refuses a second family of the same name."""

    def __init__(self) -> None:
        self.items: dict[str, Metric] = {}

    def add(self, family: Metric) -> Metric:
        if family.name in self.items:
            raise ValueError(f"duplicate metric family {family.name}")
        self.items[family.name] = family
        return family

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=labels)
        self.add(family)
        return family

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=labels)
        self.add(family)
        return family

    def has(self, name: str) -> bool:
        # Counter families are stored without their _total suffix.
        return name in self.items or name.removesuffix("_total") in self.items


SectionExporter = Callable[[Any, Families], None]
SECTION_EXPORTERS: dict[str, SectionExporter] = {}


def register_section(name: str, exporter: SectionExporter) -> None:
    """Export ``App.statistics()[name]`` with ``exporter`` instead of generically."""
    SECTION_EXPORTERS[name] = exporter


def num(value: object) -> float | None:
    """A number as float (bools as 0/1); None for anything else."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


# Names chosen by hand where the generic rule would read badly or collide (a gauge ``x``
# cannot sit next to a counter ``x_total``: both are family ``x`` in the exposition).
RENAMES = {
    "rates_dir_errors": "busd_rates_dir_files_in_error",
    "control_connections": "busd_control_connections_open",
    "reloads": "busd_schema_reloads_total",
    "reload_failures": "busd_schema_reload_failures_total",
    "deprecated_pending": "busd_schema_deprecated_pending",
    "deprecated_dropped": "busd_schema_deprecated_dropped_total",
}


def generic(section: str, data: Any, out: Families, stems: tuple[str, ...] = ()) -> None:
    """Flat numeric keys as ``busd_<key>`` when the key starts with the section name (or one
    of ``stems``), else ``busd_<section>_<key>``; counters when the name ends ``_total``.
    Nested values are skipped; a name that would collide gets ``_current``."""
    if not isinstance(data, Mapping):
        return
    prefixes = tuple(p + "_" for p in (section, *stems))
    for key, raw in data.items():
        value = num(raw)
        if value is None or not isinstance(key, str) or _METRIC_NAME.fullmatch(key) is None:
            continue
        name = RENAMES.get(key) or "busd_" + (
            key if key.startswith(prefixes) else f"{section}_{key}"
        )
        if out.has(name) or (not name.endswith("_total") and out.has(name + "_total")):
            name += "_current"
            if out.has(name):
                continue
        doc = f"{key} from the {section} statistics section."
        if name.endswith("_total"):
            out.counter(name, doc).add_metric([], value)
        else:
            out.gauge(name, doc).add_metric([], value)


def _rate_keys(rows: Any, out: Families) -> None:
    """One row per configured rate key (``RateTable.snapshot`` rows as dicts)."""
    rows = [r for r in rows or () if isinstance(r, Mapping) and "key" in r]
    per_key = (
        (
            "throttled_total",
            out.counter(
                "busd_rate_key_throttled_total",
                "Messages refused rate_limited, by the rate key that refused them.",
                ("key",),
            ),
        ),
        (
            "disabled_total",
            out.counter(
                "busd_rate_key_disabled_total",
                "Messages refused disabled (rate 0), by rate key.",
                ("key",),
            ),
        ),
        (
            "rate",
            out.gauge(
                "busd_rate_limit_messages_per_second",
                "Configured rate limit, by rate key.",
                ("key",),
            ),
        ),
        (
            "burst",
            out.gauge(
                "busd_rate_limit_burst_messages", "Configured bucket size, by rate key.", ("key",)
            ),
        ),
        (
            "tokens",
            out.gauge(
                "busd_rate_tokens", "Tokens in the bucket at scrape time, by rate key.", ("key",)
            ),
        ),
    )
    for row in rows:
        for field, family in per_key:
            value = num(row.get(field))
            if value is not None:
                family.add_metric([str(row["key"])], value)


def _rates(data: Any, out: Families) -> None:
    if not isinstance(data, Mapping):
        return
    if "keys" in data:
        _rate_keys(data["keys"], out)
    generic("rate", {k: v for k, v in data.items() if k != "keys"}, out, stems=("rates",))


def _schemas(data: Any, out: Families) -> None:
    if not isinstance(data, Mapping):
        return
    accepted = out.counter(
        "busd_schema_messages_accepted_total",
        "Messages accepted, by schema and version.",
        ("schema", "version"),
    )
    rejected = out.counter(
        "busd_schema_messages_rejected_total",
        "Messages of a known schema version rejected, by schema, version and code.",
        ("schema", "version", "code"),
    )
    status = out.gauge(
        "busd_schema_version_status",
        "1 for each loaded schema version, labelled with its status.",
        ("schema", "version", "status"),
    )
    entries: list[tuple[str, Mapping[str, Any]]] = []
    for schema in data.get("schemas") or ():
        for version in schema.get("versions") or ():
            entries.append((str(schema.get("name")), version))
            status.add_metric(
                [str(schema.get("name")), str(version.get("version")), str(version.get("status"))],
                1.0,
            )
    entries.extend((str(v.get("name")), v) for v in data.get("unloaded") or ())
    for name, version in entries:
        labels = [name, str(version.get("version"))]
        accepted.add_metric(labels, num(version.get("accepted")) or 0.0)
        for code, count in sorted((version.get("rejected") or {}).items()):
            rejected.add_metric([*labels, str(code)], num(count) or 0.0)
    unknown = out.counter(
        "busd_schema_unknown_total",
        "Messages naming a schema or version that is not loaded, by code.",
        ("code",),
    )
    for code, count in sorted((data.get("unknown") or {}).items()):
        unknown.add_metric([str(code)], num(count) or 0.0)
    generic("schema", data, out)


def _assertions(data: Any, out: Families) -> None:
    if not isinstance(data, Mapping):
        return
    ok = out.gauge(
        "busd_assertion_ok",
        "1 while the named service-level assertion holds, 0 while violated.",
        ("name",),
    )
    critical = out.gauge(
        "busd_assertion_critical", "1 when the named assertion gates /readyz.", ("name",)
    )
    violations = out.counter(
        "busd_assertion_violations_total",
        "Times the named assertion went from holding to violated.",
        ("name",),
    )
    for name, state in sorted(data.items()):
        if not isinstance(state, Mapping):
            continue
        if state.get("ok") is not None:
            ok.add_metric([str(name)], 1.0 if state["ok"] else 0.0)
        critical.add_metric([str(name)], 1.0 if state.get("critical") else 0.0)
        violations.add_metric([str(name)], num(state.get("violations")) or 0.0)


register_section("rates", _rates)
register_section("rate_keys", _rate_keys)
register_section("schemas", _schemas)
register_section("assertions", _assertions)
