"""busdctl status and busdctl ping against a real busd: check-style exit statuses (0 ready, 4
warning, 1 critical, 3 unreachable) for every state busd can be in."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from conftest import BusdProcess, wait_for
from opshttp import get
from stateclient import request

from busd_client import Publisher
from busd_protocol.snapshots import End

BUSDCTL = str(Path(sys.executable).parent / "busdctl")
pytestmark = pytest.mark.timeout(40)


def busdctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUSDCTL, *args], capture_output=True, text=True, timeout=20, check=False)


def at(busd: BusdProcess) -> tuple[str, ...]:
    return ("--metrics", busd.metrics, "--control", busd.control)


def test_a_ready_busd_is_ok_for_status_and_ping(busd: BusdProcess) -> None:
    status = busdctl("status", *at(busd))
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("busd 0.1.0: ready, up 0:00:")
    assert lines[1].split() == ["metrics", busd.metrics, "(from", "--metrics)"]
    assert lines[2].split() == ["control", busd.control, "(from", "--control)"]
    assert lines[-1] == "status: OK"
    ping = busdctl("ping", *at(busd))
    assert (ping.returncode, ping.stdout) == (0, f"busd at {busd.metrics}: ready\n")
    answer = json.loads(busdctl("status", *at(busd), "--json").stdout)
    assert (answer["status"], answer["exit"], answer["ready"]) == ("ok", 0, True)
    assert answer["stats"]["version"] == "0.1.0" and answer["rates"]["limits"] == []


def test_a_busd_warming_up_is_a_warning(busd_factory: Callable[..., BusdProcess]) -> None:
    busd = busd_factory(extra_args=("--warmup", "60"))
    ping = busdctl("ping", *at(busd), "--json")
    assert ping.returncode == 4
    answer = json.loads(ping.stdout)
    assert answer["status"] == "warning" and answer["ready"] is False
    assert answer["reasons"][0].startswith("warming up (")
    status = busdctl("status", *at(busd))
    assert status.returncode == 4
    assert status.stdout.splitlines()[-1].startswith("status: WARNING: not ready: warming up")


def test_a_violated_critical_assertion_is_critical_a_plain_one_a_warning(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    path = tmp_path / "assertions.toml"
    path.write_text(
        '[assertions.gate]\nexpr = "received > 1000000"\nwindow = "1s"\ncritical = true\n'
        '[assertions.hint]\nexpr = "received > 1000000"\nwindow = "1s"\n'
    )
    busd = busd_factory(extra_args=("--assertions", str(path)))
    wait_for(lambda: get(busd.metrics, "/readyz")[0] == 503, what="the gate violated")
    ping = busdctl("ping", *at(busd))
    assert ping.returncode == 1
    assert ping.stdout.startswith(f"busd at {busd.metrics}: CRITICAL: not ready: assertion gate")
    status = busdctl("status", *at(busd), "--json")
    assert status.returncode == 1
    answer = json.loads(status.stdout)
    assert answer["status"] == "critical"
    assert answer["problems"][-1] == "assertion(s) violated: hint"  # the gate is in reasons


def test_a_broken_rates_file_is_a_warning(busd_factory: Callable[..., BusdProcess]) -> None:
    busd = busd_factory(start=False)
    (busd.rates_dir / "publish").write_text("nan\n")
    busd.start()
    status = busdctl("status", *at(busd))
    assert status.returncode == 4
    assert "rates file(s) refused: publish (busdctl rates)" in status.stdout


def test_nothing_answering_is_unreachable(tmp_path: Path) -> None:
    where = ("--metrics", "127.0.0.1:1", "--control", str(tmp_path / "none.sock"))
    for command in ("status", "ping"):
        result = busdctl(command, *where, "--json")
        assert result.returncode == 3, result.stdout
        assert json.loads(result.stdout)["status"] == "unreachable"
    assert busdctl("ping", *where).stdout.startswith(
        "busd at 127.0.0.1:1: UNREACHABLE: metrics endpoint 127.0.0.1:1 does not answer"
    )


def test_half_an_answer_is_a_problem_named_for_what_does_not_answer(
    busd: BusdProcess, tmp_path: Path
) -> None:
    """Metrics down while the control socket answers: critical (nothing says it is ready).
    The control socket down while busd is ready: a warning (it serves; operators cannot
    change its rates)."""
    no_metrics = busdctl("status", "--metrics", "127.0.0.1:1", "--control", busd.control)
    assert no_metrics.returncode == 1
    assert "the metrics endpoint is down while the control socket answers" in no_metrics.stdout
    no_control = busdctl("status", "--metrics", busd.metrics, "--control", str(tmp_path / "x"))
    assert no_control.returncode == 4
    assert "control socket: cannot talk to busd at" in no_control.stdout


def test_without_metrics_ping_and_status_ask_the_control_socket(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(extra_args=("--metrics", "off"))
    config = busd.root / "busd.toml"
    config.write_text(f'metrics = "off"\ncontrol = "{busd.control}"\n')
    ping = busdctl("ping", "--config", str(config))
    assert (ping.returncode, ping.stdout) == (0, f"busd at {busd.control}: ready\n")
    status = busdctl("status", "--config", str(config))
    assert status.returncode == 0, status.stdout
    assert status.stdout.splitlines()[0] == "busd: running"
    assert "  rates       0 limit(s) in " in status.stdout


def test_status_shows_the_state_held_and_the_snapshots_served(busd: BusdProcess) -> None:
    data = {"app": "web", "state": "up", "host": "h", "version": "1", "reported_at": 1}
    with Publisher(busd.pub_endpoint, name="reporter", timeout=20) as pub:
        for n in range(2):
            pub.publish("instance.web", "instance-state", 1, {**data, "instance_id": str(n)})
        assert pub.flush() == []
    with zmq.Context() as ctx:
        _parts, end = request(ctx, busd.state_endpoint, "instance.")
    assert isinstance(end, End) and end.entries == 2
    status = busdctl("status", *at(busd))
    assert status.returncode == 0, status.stdout + status.stderr
    line = next(x for x in status.stdout.splitlines() if x.split()[:1] == ["state"])
    assert line.split()[1:3] == ["2", "key(s),"]
    assert line.endswith("0 evicted; 1 snapshot(s) served, 0 failed, 0 active")
    answer = json.loads(busdctl("status", *at(busd), "--json").stdout)
    state = answer["stats"]["state"]
    assert (state["entries"], state["snapshots"]["requests"]["ok"]) == (2, 1)
