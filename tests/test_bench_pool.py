"""The benchmark's ``pool`` and ``cores`` workloads run end to end on a tiny load and their
counts add up.

No timed assertions: only that `python -m bench --only pool,cores` starts its own brokers,
runs every trial once, prints the tables with same-run ratios, and that what publishers were
told was accepted reached the subscribers (the kill -9 included: the killed broker had
carried messages and its connection dropped; two brokers: both carried messages).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
MESSAGES = 200
KINDS = (
    "publish_plain_1",
    "publish_pool_1",
    "e2e_plain",
    "receive",
    "publish_pool_3",
    "e2e_pool_3",
    "failover",
)


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench-pool")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "pool,cores",
            "--systems",
            "busd",
            "--messages",
            str(MESSAGES),
            "--no-profile",
            "--busd-flag=--warmup=0",  # the cores brokers; the pool's keep their warm-up
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
def test_pool_workload_runs_every_trial_once_without_errors(
    pool_run: tuple[str, dict[str, Any]],
) -> None:
    _, doc = pool_run
    assert doc["errors"] == []
    runs = doc["results"]["pool"]["runs"]
    assert {k: len(runs[k]) for k in KINDS} == dict.fromkeys(KINDS, 1)
    for kind in ("publish_plain_1", "publish_pool_1", "publish_pool_3"):
        (run,) = runs[kind]
        assert run["sent"] == MESSAGES and run["failed"] == 0, kind
        assert run["rate"] > 0 and run["cpu_us"] > 0, kind


@pytest.mark.timeout(60)
def test_pool_workload_delivers_every_accepted_message_once(
    pool_run: tuple[str, dict[str, Any]],
) -> None:
    _, doc = pool_run
    runs = doc["results"]["pool"]["runs"]
    for kind in ("e2e_plain", "e2e_pool_3"):
        (run,) = runs[kind]
        assert run["sent"] == run["received"] == MESSAGES, kind
        assert run["lost"] == 0 and run["duplicates"] == 0, kind
    (recv,) = runs["receive"]
    assert recv["plain_received"] == recv["pool_received"] == MESSAGES
    assert recv["plain_us"] > 0 and recv["pool_us"] > 0


@pytest.mark.timeout(60)
def test_pool_failover_kills_a_broker_in_use_and_loses_nothing(
    pool_run: tuple[str, dict[str, Any]],
) -> None:
    _, doc = pool_run
    (fo,) = doc["results"]["pool"]["runs"]["failover"]
    assert fo["victim"]["accepted"] > 0 and fo["victim"]["disconnects"] >= 1
    assert fo["failed"] == {} and fo["accepted"] == fo["sent"] > 0
    assert fo["lost"] == 0 and fo["received"] == fo["accepted"]
    for window in ("baseline", "kill"):
        assert fo[window]["n"] > 0 and fo[window]["gap_ms"] > 0, window
        assert fo[window]["max_ms"] >= fo[window]["p99_ms"] > 0, window


@pytest.mark.timeout(60)
def test_pool_table_prints_ratios_to_the_same_run_baseline(
    pool_run: tuple[str, dict[str, Any]],
) -> None:
    table, doc = pool_run
    ratios = doc["results"]["pool"]["median"]["ratios"]
    assert all(isinstance(v, float) and v > 0 for v in ratios.values()), ratios
    assert "| figure | baseline | pool | ratio |" in table
    assert f"{ratios['publish_pool_3']:.2f}×" in table
    assert "kill -9 of 1 of 3" in table


CORES = ("client_1", "client_2", "raw_1", "raw_2")


@pytest.mark.timeout(60)
def test_cores_runs_one_and_two_busd_with_checks_proven_and_nothing_lost(
    pool_run: tuple[str, dict[str, Any]],
) -> None:
    """Both brokers' checks are proven; every trial ran once; each publisher's messages
    (two publishers) reached the subscriber once; with two brokers both carried traffic."""
    table, doc = pool_run
    cores = doc["results"]["cores"]
    assert [c["codes"]["schema"] for c in cores["checks"]] == ["invalid", "invalid"]
    assert {k: len(cores["runs"][k]) for k in CORES} == dict.fromkeys(CORES, 1)
    for kind in ("client_1", "client_2"):
        (run,) = cores["runs"][kind]
        assert run["sent"] == run["accepted"] == run["received"] == 2 * MESSAGES, kind
        assert run["lost"] == 0 and run["duplicates"] == 0 and run["failed"] == 0, kind
    (two,) = cores["runs"]["client_2"]
    pooled = two["per_broker_accepted"]  # measured messages only, warm-up subtracted
    assert len(pooled) == 2 and all(n > 0 for n in pooled), pooled  # round robin: both used
    assert sum(pooled) == two["accepted"], pooled
    for kind in ("raw_1", "raw_2"):
        (run,) = cores["runs"][kind]
        assert run["sent"] == run["received"] == 2 * MESSAGES, kind
        assert run["busd"]["zero_loss"] and run["busd"]["every_publish_answered"], kind
    ratios = cores["median"]["ratios"]
    assert ratios["client_delivered"] > 0 and ratios["raw_delivered"] > 0
    assert "one busd against two as a pool on this host" in table
    assert f"| | **two ÷ one** | {ratios['raw_delivered']:.2f}× |" in table
