"""busdctl pub and sub across a pool: several endpoints or a pool file."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BusdProcess, wait_for
from test_busdctl_pubsub import BUSDCTL, busdctl, release

from busd_client import PoolSubscriber

pytestmark = pytest.mark.timeout(40)


def pool_file(tmp_path: Path, brokers: list[BusdProcess]) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(
        "".join(
            f'[[broker]]\nname = "b{k}"\npub_endpoint = "{b.pub_endpoint}"\n'
            f'sub_endpoint = "{b.sub_endpoint}"\nmetrics = "{b.metrics}"\n\n'
            for k, b in enumerate(brokers)
        )
    )
    return path


def test_pub_to_a_pool_with_a_dead_broker_gets_every_message_accepted(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """busdctl pub --pool: with one broker of two killed, all lines are accepted by the other
    and a pool subscriber gets each once."""
    brokers = [busd_factory(name=f"b{k}") for k in range(2)]
    path = pool_file(tmp_path, brokers)
    with PoolSubscriber([b.sub_endpoint for b in brokers], "release.cli.") as sub:
        result = busdctl(
            "pub",
            "release.cli.warm",
            "--schema",
            "release",
            "--version",
            "2",
            "--pool",
            str(path),
            "--data",
            json.dumps(release()),
        )
        assert result.returncode == 0, result.stderr
        wait_for(lambda: sub.recv(0.1) is not None, timeout=10, what="the subscription")
        brokers[0].kill()
        lines = "".join(json.dumps(release(i)) + "\n" for i in range(50))
        result = busdctl(
            "pub",
            "release.cli.pool",
            "--schema",
            "release",
            "--version",
            "2",
            "--pool",
            str(path),
            "--timeout",
            "10",
            "--attempt-timeout",
            "0.5",
            "--json",
            stdin=lines,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["accepted"] == 50
        got: list[str] = []
        while len(got) < 50:
            message = sub.recv(5)
            assert message is not None, f"only {len(got)} of 50 arrived"
            if message.topic == "release.cli.pool":
                got.append(message.data["env"]["N"])
        assert sorted(got, key=int) == [str(i) for i in range(50)]


def test_sub_with_several_endpoints_prints_each_message_once(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """busdctl sub with a comma-separated list subscribes to all and drops a resent copy."""
    brokers = [busd_factory(name=f"b{k}") for k in range(2)]
    endpoints = ",".join(b.sub_endpoint for b in brokers)
    proc = subprocess.Popen(
        [
            BUSDCTL,
            "sub",
            "release.cli.",
            "--sub-endpoint",
            endpoints,
            "--count",
            "5",
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The same message (same id) to both brokers, as a resend would; then a marker.
        i = 0
        while proc.poll() is None and i < 400:
            i += 1
            for b in brokers:
                busdctl(
                    "pub",
                    "release.cli.dup",
                    "--schema",
                    "release",
                    "--version",
                    "2",
                    "--pub-endpoint",
                    b.pub_endpoint,
                    "--id",
                    f"dup-{i}",
                    "--data",
                    json.dumps(release(i)),
                )
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    ids = [json.loads(line)["id"] for line in out.splitlines()]
    assert len(ids) == 5 and len(set(ids)) == 5
    dropped = re.search(r"(\d+) duplicate\(s\) dropped", err)
    assert dropped is not None and int(dropped.group(1)) > 0, err


def test_pub_with_an_unreadable_pool_file_exits_2(tmp_path: Path) -> None:
    """A missing or broken pool file is a usage error (exit 2) naming the file."""
    result = busdctl(
        "pub",
        "release.cli.x",
        "--schema",
        "release",
        "--version",
        "2",
        "--pool",
        str(tmp_path / "missing.toml"),
        "--data",
        "{}",
    )
    assert result.returncode == 2
    assert "missing.toml" in result.stderr
