"""The shipped Grafana dashboard, evaluated for real: a real busd carrying traffic of every
kind the panels show, a real Prometheus server scraping it every second over loopback (with
the shipped rules loaded), and every panel's PromQL asked of Prometheus's HTTP API the way
Grafana asks it. No panel errors, none is empty, and each shows non-zero data once its
traffic flows (the one exception is named, with its reason)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import REPO, BusdProcess, free_port, wait_for
from opshttp import scrape_text
from rawproto import envelope, publish

DASHBOARD = REPO / "deploy" / "grafana" / "busd.json"
RULES = [
    REPO / "deploy" / "prometheus" / name for name in ("busd-rules.yml", "busd-pool-rules.yml")
]
ASSERTIONS = REPO / "deploy" / "assertions.toml"
PROMETHEUS = shutil.which("prometheus")
SCRAPE_SECONDS = 1
# What Grafana puts in for $__rate_interval: max(4 x scrape interval, the step).
RATE_INTERVAL = f"{4 * SCRAPE_SECONDS}s"
# A healthy busd shows zeros here, by design: replies dropped, task restarts, reload failures.
ZERO_WHEN_HEALTHY = {"Trouble"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def promql(expr: str, job: str, instance: str) -> str:
    """A target's expression with the dashboard's variables as Grafana fills them in."""
    filled = (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", job)
        # One value of a multi-value variable: Grafana regex-escapes it inside the string.
        .replace("$instance", re.escape(instance).replace("\\", "\\\\"))
    )
    assert "$" not in filled, f"unknown variable in {expr}"
    return filled


def test_the_dashboard_is_one_grafana_dashboard_with_a_query_in_every_panel() -> None:
    board = dashboard()
    assert board["uid"] == "busd" and board["title"] == "busd"
    variables = [v["name"] for v in board["templating"]["list"]]
    assert variables == ["datasource", "job", "instance"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
    assert len(panels()) >= 20
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        assert p.get("description"), p["title"]
        for t in p["targets"]:
            promql(t["expr"], "busd", "x")  # only the variables the test fills in


class Traffic(threading.Thread):
    """Every kind of traffic a panel shows, until stopped: accepted messages, invalid ones,
    unknown schemas and versions, a rate-limited topic, a disabled publisher, and raw TCP
    connections that never complete a ZMTP handshake. One thread owns its sockets."""

    def __init__(self, busd: BusdProcess) -> None:
        super().__init__(daemon=True)
        self.busd = busd
        self.stop = threading.Event()
        self.replies = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        ctx = zmq.Context()
        try:
            self._run(ctx)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            ctx.destroy(linger=0)

    def _run(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        pub = ctx.socket(zmq.DEALER)
        sub = ctx.socket(zmq.SUB)
        try:
            pub.connect(self.busd.pub_endpoint)
            sub.setsockopt(zmq.SUBSCRIBE, b"release.")
            sub.connect(self.busd.sub_endpoint)
            self._stream(pub, sub)
        finally:
            pub.close(linger=0)
            sub.close(linger=0)

    def _stream(self, pub: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
        kinds: list[tuple[str, dict[str, Any] | bytes]] = [
            ("release.dash", envelope("release.dash")),
            ("instance.dash", envelope("instance.dash")),
            ("release.dash", envelope("release.dash", data={"cmd": 1})),  # invalid
            ("release.dash", envelope("release.dash", schema="nope")),  # unknown_schema
            ("release.dash", envelope("release.dash", version=99)),  # unknown_version
            ("release.slow", envelope("release.slow")),  # rate_limited after the first
            ("release.dash", envelope("release.dash", publisher="stopped")),  # disabled
            ("release.dash", b"\xc1"),  # bad_encoding
        ]
        seq, last_probe = 0, 0.0
        while not self.stop.wait(0.004):
            for topic, kind in kinds:
                seq += 1
                body = kind if isinstance(kind, bytes) else {**kind, "id": f"dash-{seq}"}
                publish(pub, seq, topic, body)
            while pub.poll(0):
                msgpack.unpackb(pub.recv())
                self.replies += 1
            while sub.poll(0):
                sub.recv_multipart()
            if time.monotonic() - last_probe > 0.5:  # a handshake failure on each endpoint
                last_probe = time.monotonic()
                for port in (self.busd.pub_port, self.busd.sub_port):
                    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")


class Prometheus:
    """A real Prometheus server on loopback scraping ``target`` every second."""

    def __init__(self, root: Path, target: str) -> None:
        assert PROMETHEUS is not None
        self.address = f"127.0.0.1:{free_port()}"
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_SECONDS}s\n"
            f"  evaluation_interval: {SCRAPE_SECONDS}s\n"
            "rule_files:\n" + "".join(f"  - {path}\n" for path in RULES) + "scrape_configs:\n"
            "  - job_name: busd\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        self.log = root / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address={self.address}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
            )

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"http://{self.address}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=10) as resp:
                answer: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422: the answer says why
            with exc:
                if exc.code == 503:  # "Service Unavailable": still starting (up() waits)
                    raise
                answer = json.loads(exc.read())
        return answer

    def up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-2000:]}")
        try:
            targets = self.api("targets")["data"]["activeTargets"]
        except OSError:
            return False
        return bool(targets) and all(t["health"] == "up" for t in targets)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (apt-get install prometheus); .ci/run installs it")
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        root = tmp_path / f"prometheus{len(started)}"
        root.mkdir()
        started.append(Prometheus(root, target))
        return started[-1]

    yield start
    for prom in started:
        prom.stop()


def outcome(prom: Prometheus, panel: dict[str, Any], instance: str) -> str:
    """ "" when every target of the panel answers with data (non-zero somewhere, unless the
    panel is zero by design); else what is wrong. A query error raises: it will not heal."""
    values: list[float] = []
    for target in panel["targets"]:
        expr = promql(target["expr"], "busd", instance)
        answer = prom.api("query", query=expr)
        if answer["status"] != "success":
            pytest.fail(f"panel {panel['title']!r}: {expr}: {answer.get('error')}")
        result = answer["data"]["result"]
        if not result:
            return f"{target['refId']} empty: {expr}"
        values += [float(r["value"][1]) for r in result]
    if panel["title"] not in ZERO_WHEN_HEALTHY and not any(v != 0 for v in values):
        return f"all zero: {values}"
    return ""


@pytest.mark.timeout(120)
def test_every_panel_shows_data_from_a_real_prometheus_scraping_a_busd_with_traffic(
    busd_factory: Callable[..., BusdProcess], prometheus_for: Callable[[str], Prometheus]
) -> None:
    busd = busd_factory(extra_args=("--assertions", str(ASSERTIONS)), start=False)
    (busd.rates_dir / "publish").write_text("1000000\n")
    (busd.rates_dir / "publish.release.slow").write_text("0.5 1\n")
    (busd.rates_dir / "publisher.stopped").write_text("0\n")
    (busd.rates_dir / "publish.broken").write_text("nan\n")  # one file in error
    busd.start()
    traffic = Traffic(busd)
    traffic.start()
    prom = prometheus_for(busd.metrics)
    try:
        wait_for(prom.up, timeout=30, interval=0.2, what="prometheus scraping busd")
        pending: dict[str, str] = {}

        def every_panel_shows_data() -> bool:
            assert traffic.error is None, traffic.error
            pending.clear()
            for panel in panels():
                problem = outcome(prom, panel, busd.metrics)
                if problem:
                    pending[panel["title"]] = problem
            return not pending

        try:
            wait_for(every_panel_shows_data, timeout=60, interval=0.5, what="every panel's data")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still without data: {pending}") from None

        def rules_evaluated() -> list[dict[str, Any]] | None:
            groups: list[dict[str, Any]] = prom.api("rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return None if any(r["health"] == "unknown" for r in rules) else rules

        rules = wait_for(rules_evaluated, timeout=10, what="every rule evaluated once")
        broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert len(rules) == 17 and broken == [], broken
    finally:
        traffic.stop.set()
        traffic.join(10)
    assert traffic.replies > 0
    wanted = {
        name
        for p in panels()
        for t in p["targets"]
        for name in re.findall(r"\b((?:busd|process)_[a-z_]+)\{", t["expr"])
    }
    exposed = set(re.findall(r"^(\w+)[{ ]", scrape_text(busd.metrics), re.MULTILINE))
    # Families that appear with their first message are there now.
    assert wanted <= exposed, f"panels read metrics busd does not export: {wanted - exposed}"
