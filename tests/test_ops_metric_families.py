"""Every metric family busd exports, and the shape of every statistics reply, stay as recorded.

One real busd runs with every optional section switched on (rate keys, schemas with traffic on
loaded, deprecated, unknown and since unloaded versions, an assertions file, systemd
notification, the control socket) and gets traffic of every kind. Its scrape is reduced to
families (name, type, help-free), each with the label sets of its samples, and compared with
``data/metric_families.json``, recorded from busd before the exporter was declared as a
table: a family renamed, retyped, relabelled or lost fails here. The control socket's
``stats``, ``rates.list`` and ``schemas.list`` replies are compared by shape (keys and value
types) with ``data/statistics_shapes.json``; so is ``stats`` of a busd with authentication
on, whose scrape declares the same families.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import REPO, BusdProcess, TrackedContext, wait_for
from opshttp import scrape, scrape_text, value
from prometheus_client.parser import text_string_to_metric_families
from rawproto import collect, dealer, envelope, publish
from test_ops_metrics import send_known_traffic
from test_trust import Keys

from busd.ops.metric_families import FAMILIES, Family, Scrape
from busd.ops.metrics import StatsCollector
from busd.statistics import ConnectionStatistics, Statistics
from busd.transport.broker_stats import BrokerStats
from busd_client.control import ControlClient

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "metric_families.json"
SHAPES = DATA / "statistics_shapes.json"
# Label values that depend on the machine, not on busd.
_VARIES = {("busd_build", "python")} | {
    (family, name)
    for family in ("busd_build", "busd_build_info")
    for name in ("libzmq", "pyzmq", "msgpack")
}


@pytest.fixture
def notify_socket() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="busd-sd-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def families(text: str) -> list[dict[str, Any]]:
    """name, type, label names and the sorted label sets of the samples, per family."""
    out = []
    for family in text_string_to_metric_families(text):
        series = set()
        names: set[str] = set()
        for s in family.samples:
            labels = {k: ("*" if (family.name, k) in _VARIES else v) for k, v in s.labels.items()}
            names.update(k for k in labels if k != "le")
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            series.add(f"{s.name}{{{inner}}}" if inner else s.name)
        out.append(
            {
                "name": family.name,
                "type": family.type,
                "labels": sorted(names),
                "samples": sorted(series),
            }
        )
    return sorted(out, key=lambda f: f["name"])


def shape(value: Any) -> Any:
    """Keys and value types of a JSON value; a list's element shapes, deduplicated."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        shapes = {json.dumps(shape(v), sort_keys=True) for v in value}
        return [json.loads(s) for s in sorted(shapes)]
    return "null" if value is None else type(value).__name__


def _traffic(zctx: TrackedContext, busd: BusdProcess) -> None:
    pub = dealer(zctx, busd.pub_endpoint)
    send_known_traffic(zctx, pub, busd.pub_endpoint)
    v1 = envelope("release.v1", version=1)
    del v1["data"]["flag"]
    invalid = envelope("release.bad", data={"slug": 1})
    lost = envelope("release.x", schema="nope")
    too_new = envelope("release.x", version=99)
    instance = envelope("instance.web")
    sends = [
        ("release.v1", v1),
        ("release.bad", invalid),
        ("release.x", lost),
        ("release.x", too_new),
        ("instance.web", instance),
        ("release.slow", envelope("release.slow")),
        ("release.slow", envelope("release.slow")),
        ("release.stopped", envelope("release.stopped")),
    ]
    for seq, (topic, env) in enumerate(sends, start=100):
        publish(pub, seq, topic, msgpack.packb(env))
    codes = sorted(f["code"] for f in collect(pub, len(sends)).values())
    assert codes == sorted(
        [
            "accepted",
            "invalid",
            "unknown_schema",
            "unknown_version",
            "accepted",
            "accepted",
            "rate_limited",
            "disabled",
        ]
    ), codes
    pub.close()


@pytest.mark.timeout(60)
def test_every_family_and_every_statistics_reply_is_as_recorded(
    busd_factory: Callable[..., BusdProcess],
    zctx: TrackedContext,
    tmp_path: Path,
    notify_socket: str,
) -> None:
    assertions = tmp_path / "a.toml"
    assertions.write_text(
        '[assertions.latency]\nexpr = "p99_latency_ms < 50"\ncritical = true\n'
        '[assertions.flowing]\nexpr = "receive_rate > 1000000"\nwindow = "5s"\n'
    )
    busd = busd_factory(start=False, extra_args=("--assertions", str(assertions)))
    busd.env = {"NOTIFY_SOCKET": notify_socket}
    (busd.rates_dir / "publish").write_text("100000\n")
    (busd.rates_dir / "publish.release.slow").write_text("0.001 1\n")
    (busd.rates_dir / "publish.release.stopped").write_text("0\n")
    (busd.rates_dir / "publisher.tester").write_text("100000 1000\n")
    (busd.rates_dir / "publish.broken").write_text("fast\n")  # refused: a file in error
    busd.start()
    _traffic(zctx, busd)
    with ControlClient(busd.control) as control:
        # The instance-state schema goes away: its counts stay, as an unloaded version.
        shutil.rmtree(busd.schemas_dir / "instance-state")
        control.call("schemas.reload")
        wait_for(
            lambda: value(scrape(busd.metrics), "busd_assertion_ok", name="flowing") == 0,
            timeout=10,
            what="both assertions evaluated",
        )
        replies = {
            "stats": control.call("stats"),
            "rates.list": control.call("rates.list"),
            "schemas.list": control.call("schemas.list"),
        }
    got = families(scrape_text(busd.metrics))
    got_shapes = {name: shape(reply) for name, reply in replies.items()}
    actual = tmp_path / "actual"
    actual.mkdir()
    (actual / RECORDED.name).write_text(json.dumps(got, indent=1) + "\n")
    (actual / SHAPES.name).write_text(json.dumps(got_shapes, indent=1) + "\n")  # without auth
    expected = json.loads(RECORDED.read_text())
    by_name = {f["name"]: f for f in expected}
    for family in got:
        assert family == by_name.pop(family["name"], None), (family["name"], actual)
    assert not by_name, f"families no longer exported: {sorted(by_name)}"
    recorded_shapes = json.loads(SHAPES.read_text())
    assert got_shapes == {name: recorded_shapes[name] for name in replies}, actual


@pytest.mark.timeout(60)
def test_with_authentication_on_the_stats_reply_and_the_families_are_as_recorded(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    keys = Keys(tmp_path / "trust")
    keys.client("deployer")
    acl = keys.root / "acl.toml"
    acl.write_text('[identities.deployer]\npublish = ["release."]\n')
    busd = busd_factory(extra_args=keys.busd_args(acl))
    with ControlClient(busd.control) as control:
        got = shape(control.call("stats"))
    declared = {(f["name"], f["type"]) for f in families(scrape_text(busd.metrics))}
    actual = tmp_path / "actual.json"
    actual.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(SHAPES.read_text())["stats, authentication on"], actual
    recorded = json.loads(RECORDED.read_text())
    unconfigured = ("busd_assertion_", "busd_systemd_")  # no assertions file, no systemd here
    # Families only a busd with keys has: the keys directory's.
    keys_only = {("busd_identities", "gauge"), ("busd_trust_reload_failures", "counter")}
    assert (
        declared
        == {(f["name"], f["type"]) for f in recorded if not f["name"].startswith(unconfigured)}
        | keys_only
    )


def _docs_catalogue() -> list[tuple[str, str, tuple[str, ...]]]:
    """(metric, type, labels) of each row of docs/operations.md §2 but ``process_*``."""
    section = (REPO / "docs" / "operations.md").read_text().split("## 2. Metric catalogue")[1]
    rows = []
    for line in section.split("\n## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`busd_"):
            labels = tuple(label.strip(" `") for label in cells[2].split(",") if label.strip())
            rows.append((cells[0].strip("`"), cells[1], labels))
    return rows


def test_the_operations_guide_lists_every_family_with_its_type_and_labels() -> None:
    declared = [(f.name, "gauge" if f.type == "info" else f.type, f.labels) for f in FAMILIES]
    assert _docs_catalogue() == declared


def test_family_names_are_unique_and_follow_the_prometheus_conventions() -> None:
    names = [f.name for f in FAMILIES]
    assert len(set(names)) == len(names)
    for family in FAMILIES:
        assert family.name.startswith("busd_"), family.name
        assert family.name.endswith("_total") == (family.type == "counter"), family.name
        assert family.name.endswith("_info") == (family.type == "info"), family.name
        if family.unit:
            assert f"_{family.unit}" in family.name, family.name
        for unit in ("seconds", "bytes"):
            if f"_{unit}" in family.name:
                assert family.unit == unit, family.name


def _quiet_statistics() -> Statistics:
    connections = ConnectionStatistics(0, 0, 0, 0, 0)
    broker = BrokerStats().statistics()
    return Statistics(broker, connections, connections, {}, draining=False)


def test_a_family_that_fails_to_read_costs_only_itself_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_: Scrape) -> None:
        raise ZeroDivisionError("a bug")

    bad = Family("busd_broken_total", "counter", "A family with a bug.", broken)
    collector = StatsCollector(_quiet_statistics, families=(FAMILIES[0], bad, FAMILIES[1]))
    with caplog.at_level(logging.WARNING, logger="busd.metrics"):
        names = [metric.name for metric in collector.collect()]
    assert names == ["busd_messages_received", "busd_messages_accepted"]
    logged = [r for r in caplog.records if r.getMessage() == "metric family export failed"]
    assert [getattr(r, "family", None) for r in logged] == ["busd_broken_total"]
    assert "ZeroDivisionError" in getattr(logged[0], "error", "")


def test_optional_sections_that_are_not_running_export_no_family() -> None:
    """Without the optional sections only the core families are exposed."""
    collector = StatsCollector(_quiet_statistics)
    exposed = {metric.name for metric in collector.collect()}
    core = {
        "busd_messages_received",
        "busd_messages_rejected",
        "busd_processing_latency_seconds",
        "busd_task_restarts",
        "busd_ready",
        "busd_build",
    }
    assert core <= exposed
    assert not {n for n in exposed if n.startswith(("busd_rate", "busd_schema", "busd_control"))}
    assert not {n for n in exposed if n.startswith(("busd_assertion", "busd_http", "busd_systemd"))}
