"""busdctl state, run as the installed console script against real busd processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BusdProcess
from statefeed import SCHEMA, load, payload, topic
from test_trust import ACL, Keys

from busd_client import Publisher

BUSDCTL = str(Path(sys.executable).parent / "busdctl")
pytestmark = pytest.mark.timeout(60)


def busdctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUSDCTL, "state", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_state_prints_the_current_entries_as_a_table(busd: BusdProcess) -> None:
    load(busd.pub_endpoint, "shop", ["web.1", "web.2"])
    load(busd.pub_endpoint, "billing", ["worker.1"])
    done = busdctl("instance.shop.", "--state-endpoint", busd.state_endpoint)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["SCHEMA", "KEY", "TOPIC", "AGE", "DATA"]
    assert [line.split()[:3] for line in lines[1:3]] == [
        [SCHEMA, "shop/web.1", "instance.shop.web.1"],
        [SCHEMA, "shop/web.2", "instance.shop.web.2"],
    ]
    assert '"state":"up"' in lines[1] and lines[3] == "2 entries"


def test_state_json_holds_every_entry_and_the_brokers(busd: BusdProcess) -> None:
    expected = load(busd.pub_endpoint, "shop", [f"i{n}" for n in range(600)])
    done = busdctl("instance.", "--json", env={"BUSD_STATE_ENDPOINT": busd.state_endpoint})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True and out["brokers"][0]["snapshots"] == 1
    assert {tuple(e["key"]): e["data"] for e in out["entries"]} == expected
    assert {e["topic"] for e in out["entries"]} == {topic("shop", f"i{n}") for n in range(600)}


def test_state_merges_the_brokers_of_a_pool_file(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    one, two = busd_factory(name="bus1"), busd_factory(name="bus2")
    older = load(one.pub_endpoint, "shop", ["web.1", "web.2"], at=1)
    newer = load(two.pub_endpoint, "shop", ["web.2"], at=2)
    pool = tmp_path / "pool.toml"
    pool.write_text(
        "".join(
            f'[[broker]]\nname = "{b.root.name}"\npub_endpoint = "{b.pub_endpoint}"\n'
            f'sub_endpoint = "{b.sub_endpoint}"\nstate_endpoint = "{b.state_endpoint}"\n\n'
            for b in (one, two)
        )
    )
    done = busdctl("instance.", "--pool", str(pool), "--json")
    assert done.returncode == 0, done.stderr
    entries = {tuple(e["key"]): e["data"] for e in json.loads(done.stdout)["entries"]}
    assert entries == {**older, **newer}  # web.2: the newer reported_at wins


def test_state_follow_prints_the_table_then_every_change(busd: BusdProcess) -> None:
    load(busd.pub_endpoint, "shop", ["web.1"])
    argv = [BUSDCTL, "state", "instance.", "--follow", "--timeout", "20"]
    endpoints = ["--state-endpoint", busd.state_endpoint, "--sub-endpoint", busd.sub_endpoint]
    with subprocess.Popen([*argv, *endpoints], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[0] == "SCHEMA"
        assert proc.stdout.readline().split()[1] == "shop/web.1"
        assert proc.stdout.readline() == "1 entry\n"
        with Publisher(busd.pub_endpoint, name="p") as pub:
            pub.publish_wait(topic("shop", "web.1"), SCHEMA, 1, payload("shop", "web.1", "idle"))
            pub.publish_wait(topic("shop", "web.1"), SCHEMA, 1, payload("shop", "web.1", "down"))
        assert proc.stdout.readline().startswith(f'updated {SCHEMA} shop/web.1 {{"app":"shop"')
        assert proc.stdout.readline() == f"removed {SCHEMA} shop/web.1 (ended)\n"
        proc.terminate()


def test_state_follow_json_prints_one_change_per_line(busd: BusdProcess) -> None:
    argv = [BUSDCTL, "state", "instance.", "--follow", "--json", "--timeout", "20"]
    endpoints = ["--state-endpoint", busd.state_endpoint, "--sub-endpoint", busd.sub_endpoint]
    with subprocess.Popen([*argv, *endpoints], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        synced = json.loads(proc.stdout.readline())
        assert (synced["change"], synced["broker"]) == ("synced", busd.state_endpoint)
        load(busd.pub_endpoint, "shop", ["web.9"])
        added = json.loads(proc.stdout.readline())
        assert added["change"] == "added" and added["key"] == [SCHEMA, "shop", "web.9"]
        assert added["entry"]["data"]["state"] == "up"
        proc.terminate()


def test_state_exits_3_when_busd_cannot_be_reached(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    down = busd_factory(start=False)
    done = busdctl("instance.", "--state-endpoint", down.state_endpoint, "--timeout", "0.5")
    assert done.returncode == 3
    assert f"state: {down.state_endpoint}: not connected" in done.stderr


def test_state_refuses_a_pool_file_without_state_endpoints(
    busd: BusdProcess, tmp_path: Path
) -> None:
    pool = tmp_path / "pool.toml"
    pool.write_text(
        f'[[broker]]\nname = "bus1"\npub_endpoint = "{busd.pub_endpoint}"\n'
        f'sub_endpoint = "{busd.sub_endpoint}"\n'
    )
    done = busdctl("instance.", "--pool", str(pool), "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["message"].endswith("broker 'bus1': no state_endpoint")


def test_state_speaks_curve_with_the_clients_keys_and_reports_a_forbidden_prefix(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    keys = Keys(tmp_path / "trust")
    keys.client("reader")  # may subscribe to release. only
    (tmp_path / "acl.toml").write_text(ACL)
    secure = busd_factory(extra_args=keys.busd_args(tmp_path / "acl.toml"))
    where = ["--state-endpoint", secure.state_endpoint, "--sub-endpoint", secure.sub_endpoint]
    allowed = busdctl("release.", "--json", *where, env=keys.env("reader"))
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["entries"] == []
    refused = busdctl("instance.", *where, "--timeout", "3", env=keys.env("reader"))
    assert refused.returncode == 1
    assert "busd answered forbidden" in refused.stderr and "reader" in refused.stderr
    follow = busdctl(
        "release.", "--follow", "--json", "--timeout", "3", *where, env=keys.env("reader")
    )
    assert follow.returncode == 0, follow.stderr
    assert json.loads(follow.stdout.splitlines()[0])["change"] == "synced"


def test_state_refuses_an_endpoint_libzmq_cannot_use() -> None:
    done = busdctl("instance.", "--state-endpoint", "nonsense", "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["error"]["message"].startswith("cannot use the endpoints")
