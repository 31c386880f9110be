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
            "flat",
            "--messages",
            str(MESSAGES),
            "--repeat",
            "1",
            "--no-profile",
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
    assert set(doc["busd_checks"]) >= {"schema_checks", "rate_checks", "codes"}
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
