"""busdctl pool ... against a pool of real busd processes: every broker addressed and reported,
a dead one reported without stopping the others, rate drift, totals, rolling restart."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import BusdProcess, wait_for
from opshttp import get

from busd_client import Publisher
from busd_client.control import ControlClient

BUSDCTL = str(Path(sys.executable).parent / "busdctl")
Factory = Callable[..., BusdProcess]


def write_pool(
    path: Path, brokers: list[BusdProcess], restart: dict[str, str] | None = None
) -> Path:
    lines = []
    for b in brokers:
        name = b.root.name
        lines += [
            "[[broker]]",
            f'name = "{name}"',
            f'pub_endpoint = "{b.pub_endpoint}"',
            f'sub_endpoint = "{b.sub_endpoint}"',
            f'metrics = "{b.metrics}"',
            f'control = "{b.control}"',
        ]
        if restart and name in restart:
            lines.append(f"restart = {json.dumps(restart[name])}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def busdctl(pool: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BUSD_POOL"}
    return subprocess.run(
        [BUSDCTL, "pool", *args, "--pool", str(pool)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def limits(b: BusdProcess) -> dict[str, tuple[float, float]]:
    with ControlClient(b.control, timeout=5) as control:
        reply = control.call("rates.list")
    return {r["key"]: (r["rate"], r["burst"]) for r in reply["limits"]}


@pytest.fixture
def three(busd_factory: Factory, tmp_path: Path) -> tuple[list[BusdProcess], Path]:
    brokers = [busd_factory(name=f"b{i}") for i in (1, 2, 3)]
    return brokers, write_pool(tmp_path / "pool.toml", brokers)


@pytest.mark.timeout(30)
def test_pool_rate_set_and_clear_apply_to_every_broker(
    three: tuple[list[BusdProcess], Path],
) -> None:
    brokers, pool = three
    done = busdctl(pool, "rate", "set", "publish.release", "500", "--burst", "50", "--json")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["ok"] and reply["failed"] == []
    assert [b["name"] for b in reply["brokers"]] == ["b1", "b2", "b3"]
    for b in brokers:
        assert limits(b) == {"publish.release": (500, 50)}
        assert (b.rates_dir / "publish.release").read_text().split() == ["500", "50"]

    cleared = busdctl(pool, "rate", "clear", "publish.release")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.count("cleared, now unlimited") == 3
    for b in brokers:
        assert limits(b) == {}


@pytest.mark.timeout(30)
def test_pool_rate_set_with_a_broker_down_sets_the_others_and_exits_1(
    three: tuple[list[BusdProcess], Path],
) -> None:
    brokers, pool = three
    brokers[1].kill()
    done = busdctl(pool, "rate", "set", "publish", "0", "--timeout", "2")
    assert done.returncode == 1
    assert "b2: FAILED: down: cannot talk to busd" in done.stdout
    assert "b1: publish: 0 (disabled)" in done.stdout
    assert "pool rate set: failed on 1 of 3 broker(s): b2" in done.stderr
    assert limits(brokers[0]) == limits(brokers[2]) == {"publish": (0, 1)}

    status = busdctl(pool, "status", "--json")
    assert status.returncode == 1
    report = {b["name"]: b for b in json.loads(status.stdout)["brokers"]}
    assert report["b1"]["ok"] and report["b1"]["status"] == {"ready": "ready", "control": "ok"}
    assert not report["b2"]["ok"] and "down" in report["b2"]["error"]
    assert report["b3"]["ok"]


@pytest.mark.serial
@pytest.mark.timeout(30)
def test_a_hung_broker_costs_one_timeout_and_does_not_hold_up_the_others(
    three: tuple[list[BusdProcess], Path],
) -> None:
    brokers, pool = three
    brokers[1].signal(signal.SIGSTOP)  # accepts connections (kernel backlog), never answers
    try:
        for args in (("rate", "set", "publish", "700"), ("status",)):
            started = time.monotonic()
            done = busdctl(pool, *args, "--timeout", "1")
            took = time.monotonic() - started
            assert done.returncode == 1, done.stdout
            assert "b2: FAILED: down:" in done.stdout and "timed out" in done.stdout
            assert took < 4, f"{args}: {took:.1f} s for one 1 s timeout"
        assert limits(brokers[0]) == limits(brokers[2]) == {"publish": (700, 700)}
    finally:
        brokers[1].signal(signal.SIGCONT)


@pytest.mark.timeout(30)
def test_pool_rates_flags_the_broker_whose_limits_differ(
    three: tuple[list[BusdProcess], Path],
) -> None:
    brokers, pool = three
    assert busdctl(pool, "rate", "set", "publish", "500").returncode == 0
    same = busdctl(pool, "rates")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "rates: the same on all 3 broker(s) that answered" in same.stdout

    # An operator edits one host's file by hand: that broker now differs.
    (brokers[1].rates_dir / "publish").write_text("100\n")
    wait_for(lambda: limits(brokers[1]).get("publish") == (100, 100), what="b2 picks up 100")
    drift = busdctl(pool, "rates", "--json")
    assert drift.returncode == 4, drift.stderr
    found = json.loads(drift.stdout)["drift"]
    assert found["brokers"] == ["b2"]
    assert found["keys"] == {
        "publish": {
            "b1": {"rate": 500, "burst": 500},
            "b2": {"rate": 100, "burst": 100},
            "b3": {"rate": 500, "burst": 500},
        }
    }
    text = busdctl(pool, "rates")
    assert text.returncode == 4
    assert "DRIFT: b2 differ(s) from the other brokers (b1, b3)" in text.stdout
    assert "publish: b1 500/s burst 500, b2 100/s burst 100, b3 500/s burst 500" in text.stdout


@pytest.mark.timeout(30)
def test_pool_stats_reports_each_broker_and_the_pool_total(
    three: tuple[list[BusdProcess], Path],
) -> None:
    brokers, pool = three
    data = {"slug": "https://apps.example/shop/releases/42", "cmd": "bin/web", "env": {}}
    for b, count in zip(brokers, (3, 2, 0), strict=True):
        with Publisher(b.pub_endpoint, timeout=10) as pub:
            for _ in range(count):
                pub.publish_wait("release.pool.stats", "release", 2, data)
    done = busdctl(pool, "stats", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [b["stats"]["accepted"] for b in report["brokers"]] == [3, 2, 0]
    assert report["total"]["accepted"] == 5 and report["total"]["received"] == 5
    assert report["total"]["brokers_ready"] == 3

    brokers[2].kill()
    partial = busdctl(pool, "stats", "--timeout", "2")
    assert partial.returncode == 1
    rows = {line.split()[0]: line for line in partial.stdout.splitlines()[1:]}
    assert rows["b3"].split()[1] == "DOWN"
    assert "b3: down: cannot read metrics from" in partial.stdout
    assert "pool stats: failed on 1 of 3 broker(s): b3" in partial.stderr
    assert rows["TOTAL"].split()[1:4] == ["2/3", "ready", "5"]


@pytest.mark.timeout(30)
def test_pool_schemas_reload_reports_each_broker(three: tuple[list[BusdProcess], Path]) -> None:
    brokers, pool = three
    (brokers[1].schemas_dir / "release" / "v2.json").write_text("{")
    done = busdctl(pool, "schemas", "reload", "--json")
    assert done.returncode == 1
    report = {b["name"]: b for b in json.loads(done.stdout)["brokers"]}
    assert report["b1"]["ok"] and report["b3"]["ok"]
    assert report["b1"]["reply"]["loaded"] == 2
    assert "(schemas_refused)" in report["b2"]["error"]
    for b, reloads in zip(brokers, (1, 0, 1), strict=True):
        with ControlClient(b.control, timeout=5) as control:
            assert control.call("schemas.list")["reloads"] == reloads


# -- rolling restart ----------------------------------------------------------------------

SUPERVISOR = """
import json, os, signal, subprocess, sys, time
pidfile, log, *argv = sys.argv[1:]
stopping = False
child = None
def stop(*_):
    global stopping
    stopping = True
    if child is not None:
        child.kill()
signal.signal(signal.SIGTERM, stop)
while not stopping:  # like systemd Restart=always, without the back-off
    with open(log, "ab") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=out)
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.replace(pidfile + ".tmp", pidfile)
    child.wait()
"""

# The restart command: note what every broker looks like now, then stop this broker's busd
# (the supervisor starts a new one) and return once the old process is gone.
RESTART = """
import json, os, sys, time, urllib.request, urllib.error
name, pidfile, events, *others = sys.argv[1:]
def ready(address):
    try:
        return urllib.request.urlopen(f"http://{address}/readyz", timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
seen = {}
for item in others:
    other, other_pidfile, address = item.split("=")
    seen[other] = {"ready": ready(address), "pid": int(open(other_pidfile).read())}
pid = int(open(pidfile).read())
with open(events, "a") as f:
    f.write(json.dumps({"broker": name, "t": time.time(), "pid": pid, "seen": seen}) + "\\n")
os.kill(pid, 15)
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        break
    time.sleep(0.02)
"""


class Supervised:
    def __init__(self, busd: BusdProcess, script: Path):
        self.busd = busd
        self.name = busd.root.name
        self.pidfile = busd.root / "busd.pid"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.pidfile), str(busd.log_path), *busd.argv()],
            cwd=busd.root,
        )

    def pid(self) -> int:
        return int(self.pidfile.read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        # A busd started just as the supervisor was told to stop.
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.pid(), signal.SIGKILL)


@pytest.fixture
def supervised(busd_factory: Factory, tmp_path: Path) -> Iterator[list[Supervised]]:
    script = tmp_path / "supervise.py"
    script.write_text(SUPERVISOR)
    brokers = [Supervised(busd_factory(name=f"b{i}", start=False), script) for i in (1, 2, 3)]
    try:
        for s in brokers:
            wait_for(
                lambda s=s: s.pidfile.exists() and _ready(s.busd.metrics),
                timeout=15,
                what=f"{s.name} ready",
            )
        yield brokers
    finally:
        for s in brokers:
            s.stop()


def _ready(address: str) -> bool:
    try:
        return get(address, "/readyz", timeout=1)[0] == 200
    except OSError:
        return False


@pytest.mark.timeout(40)
def test_pool_restart_restarts_each_broker_once_and_the_next_only_when_it_is_ready(
    supervised: list[Supervised], tmp_path: Path
) -> None:
    script, events = tmp_path / "restart.py", tmp_path / "events.jsonl"
    script.write_text(RESTART)
    before = {s.name: s.pid() for s in supervised}
    restart = {
        s.name: f"{sys.executable} {script} {s.name} {s.pidfile} {events} "
        + " ".join(f"{o.name}={o.pidfile}={o.busd.metrics}" for o in supervised if o is not s)
        for s in supervised
    }
    pool = write_pool(tmp_path / "pool.toml", [s.busd for s in supervised], restart)

    done = busdctl(pool, "restart", "--ready-timeout", "15", "--json", timeout=35)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and [b["state"] for b in report["brokers"]] == ["restarted"] * 3
    assert "b2: ready" in done.stderr  # progress lines go to stderr with --json

    after = {s.name: s.pid() for s in supervised}
    assert all(after[n] != before[n] for n in before), (before, after)
    order = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["broker"] for e in order] == ["b1", "b2", "b3"]
    for i, event in enumerate(order):
        assert event["pid"] == before[event["broker"]]
        for other, seen in event["seen"].items():
            # Every other broker answered ready, and those before it were already new.
            assert seen["ready"] == 200, (event["broker"], other, seen)
            restarted_already = int(other[1]) < i + 1
            assert (seen["pid"] != before[other]) == restarted_already, (event, before)
    for s in supervised:
        assert get(s.busd.metrics, "/readyz")[0] == 200


@pytest.mark.timeout(30)
def test_pool_restart_refuses_while_a_broker_is_down(busd_factory: Factory, tmp_path: Path) -> None:
    brokers = [busd_factory(name=f"b{i}") for i in (1, 2)]
    marker = tmp_path / "restarted"
    pool = write_pool(
        tmp_path / "pool.toml", brokers, {b.root.name: f"touch {marker}" for b in brokers}
    )
    brokers[1].kill()
    done = busdctl(pool, "restart")
    assert done.returncode == 1
    assert "refused, not every broker is ready now" in done.stderr
    assert "b2 (down:" in done.stderr
    assert not marker.exists()


@pytest.mark.timeout(30)
def test_pool_restart_aborts_at_a_failing_restart_command_leaving_the_rest_untouched(
    busd_factory: Factory, tmp_path: Path
) -> None:
    brokers = [busd_factory(name=f"b{i}") for i in (1, 2)]
    marker = tmp_path / "restarted"
    pool = write_pool(
        tmp_path / "pool.toml",
        brokers,
        {"b1": "echo no route to bus1 >&2; exit 3", "b2": f"touch {marker}"},
    )
    done = busdctl(pool, "restart", "--json")
    assert done.returncode == 1
    assert "aborted at b1: restart command exited with status 3; not restarted: b2" in done.stderr
    assert "b1| no route to bus1" in done.stderr
    assert [b["state"] for b in json.loads(done.stdout)["brokers"]] == ["failed", "untouched"]
    assert not marker.exists()


@pytest.mark.timeout(30)
def test_pool_restart_kills_a_restart_command_that_overruns_its_timeout(
    busd_factory: Factory, tmp_path: Path
) -> None:
    brokers = [busd_factory(name=f"b{i}") for i in (1, 2)]
    marker = tmp_path / "restarted"
    pool = write_pool(
        tmp_path / "pool.toml",
        brokers,
        {"b1": f"sleep 30; touch {marker}", "b2": f"touch {marker}"},
    )
    started = time.monotonic()
    done = busdctl(pool, "restart", "--timeout", "0.5")
    assert done.returncode == 1
    assert (
        "aborted at b1: restart command did not finish within 0.5 s (killed); "
        "not restarted: b2" in done.stderr
    )
    assert time.monotonic() - started < 5
    assert not marker.exists()


@pytest.mark.timeout(30)
def test_pool_restart_aborts_when_a_broker_is_not_back_within_the_ready_timeout(
    busd_factory: Factory, tmp_path: Path
) -> None:
    brokers = [busd_factory(name=f"b{i}") for i in (1, 2, 3)]
    marker = tmp_path / "restarted"
    assert brokers[1].proc is not None
    pool = write_pool(
        tmp_path / "pool.toml",
        brokers,
        {
            "b1": "true",  # exits 0 but restarts nothing: the old process is still serving
            "b2": f"kill -KILL {brokers[1].proc.pid}",  # stops it, and nothing starts it again
            "b3": f"touch {marker}",
        },
    )
    started = time.monotonic()
    done = busdctl(pool, "restart", "--ready-timeout", "1")
    assert done.returncode == 1
    assert (
        "aborted at b1: not ready within 1 s (last: ready, but still the process from "
        "before the restart); not restarted: b2, b3" in done.stderr
    )
    assert time.monotonic() - started < 10

    pool = write_pool(
        tmp_path / "pool2.toml",
        brokers[1:],
        {"b2": f"kill -KILL {brokers[1].proc.pid}", "b3": f"touch {marker}"},
    )
    done = busdctl(pool, "restart", "--ready-timeout", "1")
    assert done.returncode == 1
    assert "aborted at b2: not ready within 1 s (last: down:" in done.stderr
    assert not marker.exists()


@pytest.mark.timeout(30)
def test_deploy_rolling_restart_runs_busdctl_pool_restart_on_the_pool_file(
    busd_factory: Factory, tmp_path: Path
) -> None:
    script = Path(__file__).resolve().parents[1] / "deploy" / "rolling-restart"
    brokers = [busd_factory(name=f"b{i}") for i in (1, 2)]
    marker = tmp_path / "restarted"
    pool = write_pool(
        tmp_path / "pool.toml", brokers, {b.root.name: f"touch {marker}" for b in brokers}
    )
    brokers[0].kill()
    # Decoys first on PATH (systemd's /usr/bin/busctl is one on most hosts): never run.
    decoys = tmp_path / "decoys"
    decoys.mkdir()
    for name in ("busctl", "busdctl"):
        (decoys / name).write_text("#!/bin/sh\necho decoy >&2\nexit 99\n")
        (decoys / name).chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if k != "BUSDCTL"},
        "PATH": f"{decoys}:/usr/bin:/bin",
        "BUSD_POOL": str(tmp_path / "absent.toml"),
    }
    done = subprocess.run(
        [str(script), str(pool), "--ready-timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 1
    assert "refused, not every broker is ready now" in done.stderr and "b1 (down:" in done.stderr
    assert not marker.exists()

    # Without a file argument, $BUSD_POOL names the pool file.
    done = subprocess.run(
        [str(script), "--force", "--ready-timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 2
    assert f"{tmp_path / 'absent.toml'}: cannot read" in done.stderr
    assert "decoy" not in done.stderr

    # $BUSDCTL wins when set.
    named = subprocess.run(
        [str(script), str(pool)],
        env={**env, "BUSDCTL": str(decoys / "busdctl")},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert (named.returncode, named.stderr) == (99, "decoy\n")


@pytest.mark.timeout(30)
def test_an_installed_rolling_restart_runs_the_busdctl_next_to_it_through_a_symlink(
    busd_factory: Factory, tmp_path: Path
) -> None:
    """deploy/README.md: /opt/busd/bin/rolling-restart, linked from /usr/local/sbin."""
    script = Path(__file__).resolve().parents[1] / "deploy" / "rolling-restart"
    bin_dir, sbin = tmp_path / "opt" / "bin", tmp_path / "sbin"
    bin_dir.mkdir(parents=True)
    sbin.mkdir()
    shutil.copy(script, bin_dir / "rolling-restart")
    (bin_dir / "busdctl").symlink_to(BUSDCTL)
    (sbin / "rolling-restart").symlink_to(bin_dir / "rolling-restart")
    brokers = [busd_factory(name="b1")]
    marker = tmp_path / "restarted"
    pool = write_pool(tmp_path / "pool.toml", brokers, {"b1": f"touch {marker}"})
    done = subprocess.run(
        [str(sbin / "rolling-restart"), str(pool), "--ready-timeout", "1"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    # It ran busdctl pool restart: the restart command ran; the same process stays ready,
    # which a rolling restart refuses to count as restarted (so it waits the 1 s out).
    assert marker.exists(), done.stderr
    assert "b1: restarting: touch" in done.stdout


@pytest.mark.timeout(40)
def test_pool_stats_shows_the_keys_each_broker_holds_and_sums_them(
    three: tuple[list[BusdProcess], Path],
) -> None:
    """Each broker holds what it accepted: a key reported to two brokers counts once on each."""
    brokers, pool = three
    data = {"app": "web", "state": "up", "host": "h", "version": "1", "reported_at": 1}
    for b, ids in zip(brokers, (["0", "1"], ["1", "2", "3"], []), strict=True):
        with Publisher(b.pub_endpoint, name="reporter", timeout=10) as pub:
            for i in ids:
                pub.publish("instance.web", "instance-state", 1, {**data, "instance_id": i})
            assert pub.flush() == []
    done = busdctl(pool, "stats", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [b["stats"]["state"]["entries"] for b in report["brokers"]] == [2, 3, 0]
    total = report["total"]["state"]
    assert total["entries"] == 5
    assert total["bytes"] == sum(b["stats"]["state"]["bytes"] for b in report["brokers"])
    text = busdctl(pool, "stats")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    keys = lines[0].split().index("KEYS")
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert [rows[name][keys] for name in ("b1", "b2", "b3")] == ["2", "3", "0"]
    assert rows["TOTAL"][keys + 1] == "5"  # its STATE column is two words ("3/3 ready")
