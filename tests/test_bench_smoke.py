"""The benchmark harness runs end to end on a tiny workload and its figures add up.

No timed assertions: only that `python -m bench` runs busd (both publishers) and zmq.proxy,
prints the table with same-run ratios, writes the JSON record with the documented fields,
and that busd's counts are consistent (every publish answered, accepted = delivered).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
MESSAGES = 300


def _bench_package() -> Any:
    """Import the checkout's ``bench`` package without putting the checkout on sys.path
    (tests must import the installed busd, not the checkout's)."""
    if "bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "bench",
            REPO / "bench" / "__init__.py",
            submodule_search_locations=[str(REPO / "bench")],
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench"]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--systems",
            "zmq.proxy,busd,busd-raw",
            "--only",
            "flat,batch",
            "--messages",
            str(MESSAGES),
            "--repeat",
            "1",
            "--no-profile",
            "--busd-flag=--warmup=0",  # the probe's warm-up wait has tests of its own
            "--batch-sizes",
            "100",  # N = 1 is the flat row's path; 100 proves the batched ones
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    return proc.stdout, json.loads(files[0].read_text())


@pytest.mark.timeout(60)
def test_bench_prints_table_with_same_run_ratios(bench_run: tuple[str, dict[str, Any]]) -> None:
    """The table has a row per system and busd's ratios to zmq.proxy from the same run."""
    table, _ = bench_run
    assert "| system | 1→1 flat-out delivered |" in table
    for label in (
        "zmq.proxy (XSUB/XPUB in C)",
        "busd, busd_client.Publisher",
        "busd, raw protocol-v1 publisher",
        "**busd ÷ zmq.proxy**",
        "**busd-raw ÷ zmq.proxy**",
    ):
        assert f"| {label} |" in table, label
    assert "JSON: " in table


@pytest.mark.timeout(60)
def test_bench_json_records_machine_settings_and_busd_counts(
    bench_run: tuple[str, dict[str, Any]],
) -> None:
    """Every busd publish is answered and accepted, and the subscriber got each one once."""
    _, doc = bench_run
    machine = doc["meta"]["machine"]
    assert {"nproc", "cpu", "python", "pyzmq", "libzmq"} <= set(machine)
    assert doc["settings"]["messages"] == MESSAGES
    assert doc["errors"] == [] and doc["skipped"] == {}
    assert "profile" not in doc["results"]  # --no-profile
    checks = doc["busd_checks"]
    assert checks["schema_checks"] and checks["rate_checks"] and checks["valid_accepted"]
    assert checks["codes"] == {"valid": "accepted", "schema": "invalid", "rate": "disabled"}
    flat = doc["results"]["flat"]
    for name in ("busd", "busd-raw"):
        (run,) = flat[name]["runs"]
        assert run["sent"] == MESSAGES
        assert run["received"] == MESSAGES
        assert run["busd"]["answered"] == MESSAGES
        assert run["busd"]["accepted"] == MESSAGES
        assert run["busd"]["unanswered"] == 0 and run["busd"]["rejected"] == 0
        assert run["busd"]["zero_loss"] and run["busd"]["every_publish_answered"]
        assert run["delivered"] > 0 and run["server_cpu_us_per_msg"] >= 0  # 10 ms ticks
        assert run["publisher_cpu_us_per_msg"] > 0
        assert flat[name]["median"]["busd_zero_loss_all_runs"] is True
    proxy = flat["zmq.proxy"]["runs"][0]
    assert proxy["sent"] == MESSAGES and "busd" not in proxy
    assert 0 < proxy["received"] <= MESSAGES


@pytest.mark.timeout(60)
def test_batch_sweep_runs_where_the_client_and_busd_allow_and_says_why_not_elsewhere(
    bench_run: tuple[str, dict[str, Any]],
) -> None:
    """A batch size runs exactly when busd_client has the batching API (the client's row)
    or busd advertises batches that large (the raw row), else the table names the reason.
    Every run that ran: every publish answered, each message delivered once."""
    table, doc = bench_run
    _bench_package()
    from bench.drivers_zmq import client_batching_missing

    batch = doc["results"]["batch"]
    client_why = client_batching_missing()
    assert batch["sizes"] == [100]
    assert batch["client_batching"] == (client_why or "available")
    assert batch["advertised"] == doc["busd_checks"]["batch"]
    assert "1→1 flat-out by publisher batch size" in table
    for name in ("busd", "busd-raw"):
        why = batch["unavailable"].get(name, {}).get("100")
        can = batch["advertised"] >= 100 and (name == "busd-raw" or client_why is None)
        assert (why is None) == can, (name, why)
        if why is not None:
            assert f"- {name}, max_batch 100: not run: {why}" in table
            continue
        (run,) = batch["runs"][name]["100"]
        assert run["sent"] == run["received"] == MESSAGES, name
        assert run["busd"]["answered"] == run["busd"]["accepted"] == MESSAGES, name
        assert batch["median"][name]["100"]["zero_loss_all_runs"] is True


def _trial(received: list[int], accepted: int, sent: int = 100) -> Any:
    _bench_package()
    from bench.runner import Trial

    pub = {
        "sent": sent,
        "t_start": 0,
        "t_end": 10**9,
        "answered": sent,
        "accepted": accepted,
        "unanswered": 0,
        "rejected": {"invalid": sent - accepted} if sent - accepted else {},
    }
    subs = [{"received": n, "t_first": 1, "t_last": 10**9 + 1} for n in received]
    return Trial([pub], subs)


@pytest.mark.timeout(10)
def test_delivery_reports_loss_when_a_subscriber_missed_accepted_messages() -> None:
    _bench_package()
    from bench.metrics import delivery

    figures = delivery(_trial([100, 99], accepted=100))
    assert figures["lost"] == 1
    assert figures["busd"]["zero_loss"] is False
    assert figures["busd"]["every_publish_answered"] is True
    assert delivery(_trial([100, 100], accepted=100))["busd"]["zero_loss"] is True


@pytest.mark.timeout(10)
def test_delivery_reports_rejections_as_not_loss_free() -> None:
    _bench_package()
    from bench.metrics import delivery

    figures = delivery(_trial([98], accepted=98))
    assert figures["lost"] == 0  # every accepted message arrived...
    assert figures["busd"]["zero_loss"] is False  # ...but busd refused two of them
    assert figures["busd"]["rejected_by_code"] == {"invalid": 2}


@pytest.mark.timeout(10)
def test_hot_functions_ranks_self_and_inclusive_time() -> None:
    _bench_package()
    from bench.profile import hot_functions

    collapsed = (
        "main (busd/cli.py:10);_pump (busd/broker.py:200) 6\n"
        "main (busd/cli.py:10);_pump (busd/broker.py:210);decide (k.py:5) 4\n"
    )
    hot = hot_functions(collapsed)
    assert hot["samples"] == 10
    assert hot["self"][0] == ["_pump (busd/broker.py)", 60.0]
    assert ["decide (k.py)", 40.0] in hot["self"]
    assert hot["inclusive"][0][1] == 100.0
    assert hot["self_lines"][0] == ["_pump (busd/broker.py:200)", 60.0]


@pytest.mark.timeout(10)
def test_hot_functions_leaves_out_threads_blocked_in_c() -> None:
    """A worker thread waiting on its queue is idle, not a hot spot (py-spy --native)."""
    _bench_package()
    from bench.profile import hot_functions

    collapsed = (
        "main (busd/cli.py:10);_pump (busd/broker.py:200) 3\n"
        "run (threading.py:1);get_impl (q.c);PyThread_acquire_lock_timed (t.c) 9\n"
    )
    hot = hot_functions(collapsed)
    assert hot["samples"] == 3 and hot["idle_samples"] == 9
    assert hot["self"] == [["_pump (busd/broker.py)", 100.0]]


@pytest.mark.timeout(10)
def test_no_profile_turns_the_profile_off_and_quick_keeps_it_off() -> None:
    _bench_package()
    from bench.cli import build_parser, settings_from

    parse = build_parser().parse_args
    assert settings_from(parse([])).profile is True
    assert settings_from(parse(["--no-profile"])).profile is False
    assert settings_from(parse(["--quick"])).profile is False
    assert settings_from(parse(["--quick", "--profile"])).profile is True
    assert settings_from(parse(["--profile-native"])).profile_native is True
    assert settings_from(parse([])).profile_native is False


def _probe_module() -> Any:
    _bench_package()
    from bench import probe

    return probe


@pytest.mark.timeout(60)
def test_probe_waits_out_the_warmup_and_proves_every_check_on() -> None:
    """busd answers not_ready with retry_after_ms while warming up; the probe waits that long
    and asks again, then finds the invalid payload refused and the disabled key refused."""
    probe = _probe_module()
    from bench.servers import BusdOptions, start_busd

    server = start_busd(BusdOptions(extra=("--warmup", "1.5")), name="busd-probe-warm")
    try:
        found = probe.probe_busd(server, probe.ALL_ON, timeout=40)
    finally:
        server.stop()
    assert found.proves(probe.ALL_ON), found
    assert found.codes == {"valid": "accepted", "schema": "invalid", "rate": "disabled"}
    assert found.rounds >= 2 and found.waited_ms > 0  # the first round met the warm-up
    assert found.why_not(probe.ALL_ON) == ""


@pytest.mark.timeout(60)
def test_probe_gives_up_at_once_when_the_warmup_outlasts_its_bound() -> None:
    """A warm-up longer than the probe may wait is not slept through: no check is proven,
    and start_checked refuses the busd (Unproven) and stops it."""
    probe = _probe_module()
    from bench.servers import BusdOptions

    opts = BusdOptions(extra=("--warmup", "600"))
    with pytest.raises(probe.Unproven, match=r"warming up for \d+ ms more, past the probe's 3 s"):
        probe.start_checked("busd-probe-cold", opts, probe.ALL_ON, timeout=3)
    server = probe.servers.start_busd(opts, name="busd-probe-cold2")
    try:
        found = probe.probe_busd(server, probe.ALL_ON, timeout=3)
    finally:
        server.stop()
    assert not found.proves(probe.ALL_ON)
    assert not (found.schema_checks or found.rate_checks or found.valid_accepted)
    assert set(found.codes.values()) == {"not_ready"} and found.rounds == 1
    assert "checks not proven (busd is warming up" in found.why_not(probe.ALL_ON)


@pytest.mark.timeout(60)
def test_probe_tells_a_schema_check_that_accepts_everything_from_one_that_checks(
    tmp_path: Path,
) -> None:
    """With accept-all schemas the invalid payload is accepted: 'all on' is not proven,
    'schema off, rate on' is."""
    probe = _probe_module()
    from bench.busd_only import accept_all_schemas
    from bench.servers import BusdOptions, start_busd

    opts = BusdOptions(extra=("--warmup", "0"), schemas_dir=accept_all_schemas(tmp_path))
    server = start_busd(opts, name="busd-probe-open")
    try:
        all_on = probe.probe_busd(server, probe.ALL_ON, timeout=1.5)
        schema_off = probe.probe_busd(server, probe.Expect(schema=False, rate=True), timeout=10)
    finally:
        server.stop()
    assert not all_on.proves(probe.ALL_ON)
    assert all_on.codes["schema"] == "accepted" and all_on.valid_accepted
    assert "expected schema on, rate limit on, found schema off" in all_on.why_not(probe.ALL_ON)
    assert schema_off.proves(probe.Expect(schema=False, rate=True)), schema_off


@pytest.mark.timeout(90)
def test_bench_exits_non_zero_and_reports_busd_unmeasured_when_checks_are_unproven(
    tmp_path: Path,
) -> None:
    """No busd row (nor check-cost row) is reported as checked when the probe cannot prove
    it: the run says so and exits 1."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--systems",
            "busd-raw",
            "--only",
            "flat,checks",
            "--messages",
            "50",
            "--no-profile",
            "--busd-flag=--warmup=600",
            "--probe-timeout",
            "2",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "- busd NOT MEASURED: busd: checks not proven" in proc.stdout
    assert "| busd, raw protocol-v1 publisher | 0" not in proc.stdout
    assert "| schema + rate bucket | NOT PROVEN, not measured" in proc.stdout
    assert "(proven)" not in proc.stdout
    (record,) = tmp_path.glob("*.json")
    doc = json.loads(record.read_text())
    assert "flat" not in doc["results"] and doc["busd_checks"] is None
    assert any("busd-raw: not measured" in e for e in doc["errors"])
    assert all("runs" not in v for v in doc["results"]["checks"]["variants"].values())


@pytest.mark.timeout(10)
def test_the_1k_payload_makes_a_1_kib_envelope() -> None:
    """The 1 KiB row's message is 1024 bytes of envelope, and release v2 accepts it."""
    _bench_package()
    from bench import message

    body = message.Envelopes(data=message.payload("1k")).encode(message.TOPIC)
    assert len(body) == message.KIB == 1024
    assert message.payload(None) is message.DATA


@pytest.mark.timeout(90)
def test_bench_runs_the_curve_row_with_authentication_on_and_every_message_delivered(
    tmp_path: Path,
) -> None:
    """busd-curve is busd started with a server key and a keys directory; its publishers
    and subscribers speak CURVE with their own keys, every publish is accepted, the 1 KiB
    row runs on it too, and the table gives its ratio to busd without authentication."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--systems",
            "busd,busd-curve",
            "--only",
            "flat,flat1k",
            "--messages",
            "200",
            "--repeat",
            "1",
            "--no-profile",
            "--busd-flag=--warmup=0",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| **busd-curve ÷ busd (CURVE cost)** |" in proc.stdout
    assert "1→1 flat-out, 1 KiB messages" in proc.stdout
    (record,) = tmp_path.glob("*.json")
    doc = json.loads(record.read_text())
    argv = doc["meta"]["servers"]["busd-curve"]["argv"]
    assert "--curve-secret" in argv and "--keys-dir" in argv
    assert "--curve-secret" not in doc["meta"]["servers"]["busd"]["argv"]
    assert doc["meta"]["servers"]["busd-curve"]["checks"]["codes"]["valid"] == "accepted"
    for workload in ("flat", "flat1k"):
        (run,) = doc["results"][workload]["busd-curve"]["runs"]
        assert run["sent"] == run["received"] == 200
        assert run["busd"]["zero_loss"] and run["busd"]["every_publish_answered"]


@pytest.mark.timeout(90)
def test_profile_writes_its_stacks_into_an_output_directory_that_did_not_exist(
    tmp_path: Path,
) -> None:
    """py-spy opens --output itself: the profile step creates the directory first (a fresh
    checkout has no bench/results/), and the run reports busd's hot functions."""
    _bench_package()
    from bench.profile import py_spy

    if py_spy() is None:
        pytest.skip("py-spy is not installed here (bash bench/install.sh installs it)")
    out = tmp_path / "not" / "yet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--systems",
            "busd-raw",
            "--only",
            "flat",
            "--messages",
            "200",
            "--repeat",
            "1",
            "--profile",
            "--profile-duration",
            "1",
            "--busd-flag=--warmup=0",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "busd hot functions under 1→1 flat-out" in proc.stdout
    (record,) = out.glob("*.json")
    profile = json.loads(record.read_text())["results"]["profile"]
    assert profile["samples"] > 0 and Path(profile["file"]).exists()


@pytest.mark.timeout(20)
def test_two_zeromq_routers_share_one_port_and_the_kernel_splits_connections() -> None:
    """ZMQ_USE_FD with SO_REUSEPORT listeners (docs/performance.md, "More than one core"):
    every DEALER connection reaches one of the two ROUTERs, and both get some."""
    _bench_package()
    from bench.reuseport import split

    got = split(routers=2, dealers=20)
    assert sum(got) == 20 and all(n > 0 for n in got), got


@pytest.mark.timeout(20)
def test_targets_table_judges_the_runs_ratios_and_says_which_rows_did_not_run(
    bench_run: tuple[str, dict[str, Any]],
) -> None:
    """bench.targets reads the JSON record: busd ÷ zmq.proxy from the same run's medians,
    judged against issue 17's 0.8 times; workloads that did not run (NATS, latency) give '—'."""
    _, doc = bench_run
    _bench_package()
    from bench.targets import render, rows

    flat = doc["results"]["flat"]
    ratio = flat["busd"]["median"]["delivered"] / flat["zmq.proxy"]["median"]["delivered"]
    by_title = {r[0]: r for r in rows(doc, "busd")}
    row = by_title["1→1 flat-out ÷ zmq.proxy"]
    assert row[2] == f"{ratio:.2f}×"
    assert row[3] == ("met" if ratio >= 0.8 else "**not met**")
    assert by_title["1→1 flat-out ÷ NATS"][2:] == ("—", "—")
    assert by_title["1→1: every publish answered, 0 loss"][2:] == ("yes", "met")
    assert by_title["latency at 5,000 msg/s: p99.9"][2:] == ("—", "—")
    assert "| target | goal | busd | busd-raw |" in render(doc)
