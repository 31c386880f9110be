"""busdctl finds busd by itself: one order (flag > environment > busd's configuration file >
/run/busd/control.sock > ./var/run/control.sock) for every command, and on a host installed
as deploy/README.md says no flag at all, even with PATH=/usr/bin:/bin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BIN, REPO, BusdProcess, wait_for
from hostns import PrivateHost, private_host

from busd_client.cli.locate import connect_address, connect_endpoint

BUSDCTL = str(Path(sys.executable).parent / "busdctl")
pytestmark = pytest.mark.timeout(60)
RELEASE = '{"slug": "https://apps.example/shop/releases/42", "cmd": "bin/web", "env": {}}'


def busdctl(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BUSD_")}
    return subprocess.run(
        [BUSDCTL, *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env={**clean, **(env or {})},
        cwd=cwd,
    )


def test_the_flag_beats_the_environment_which_beats_the_configuration_file(
    busd: BusdProcess, tmp_path: Path
) -> None:
    wrong = str(tmp_path / "wrong.sock")
    config = tmp_path / "busd.toml"
    config.write_text(f'control = "{wrong}"\n')
    env = {"BUSD_CONTROL": wrong, "BUSD_CONFIG": str(config)}
    assert busdctl("rates", "--control", busd.control, env=env).returncode == 0
    assert busdctl("rates", env={**env, "BUSD_CONTROL": busd.control}).returncode == 0
    config.write_text(f'control = "{busd.control}"\n')
    assert busdctl("rates", env={"BUSD_CONFIG": str(config)}).returncode == 0
    refused = busdctl("rates", env={**env, "BUSD_CONFIG": str(config)})
    assert refused.returncode == 3
    assert f"cannot talk to busd at {wrong}" in refused.stderr
    assert "(found via BUSD_CONTROL)" in refused.stderr


def test_the_configuration_file_gives_every_address_and_config_beats_busd_config(
    busd: BusdProcess, tmp_path: Path
) -> None:
    """control from var_dir when the file sets no control; metrics; pub and sub endpoints."""
    config = tmp_path / "busd.toml"
    config.write_text(
        f'var_dir = "{busd.root}"\nmetrics = "{busd.metrics}"\n'
        f'pub_endpoint = "{busd.pub_endpoint}"\nsub_endpoint = "{busd.sub_endpoint}"\n'
    )
    decoy = tmp_path / "decoy.toml"
    decoy.write_text('control = "/nonexistent"\nmetrics = "127.0.0.1:1"\n')
    env = {"BUSD_CONFIG": str(decoy)}
    status = busdctl("status", "--config", str(config), "--json", env=env)
    assert status.returncode == 0, status.stdout
    answer = json.loads(status.stdout)
    assert answer["control"] == {"path": busd.control, "source": f"{config} var_dir"}
    assert answer["metrics"] == {"address": busd.metrics, "source": str(config)}
    sub = subprocess.Popen(
        [BUSDCTL, "sub", "release.", "--count", "1", "--timeout", "20", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _subscribers(busd) >= 1, timeout=10, what="busdctl sub connected")
        pub = busdctl(
            "pub", "release.shop", "--schema", "release", "--version", "2",
            "--data", RELEASE, "--config", str(config),
        )  # fmt: skip
        assert pub.returncode == 0, pub.stderr
        out, err = sub.communicate(timeout=20)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)
    assert sub.returncode == 0, err
    assert json.loads(out)["topic"] == "release.shop"


def _subscribers(busd: BusdProcess) -> float:
    from opshttp import scrape

    return scrape(busd.metrics).get(("busd_subscribers_connected", ()), 0.0)


def test_without_anything_else_the_make_run_layout_is_used(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """./var/run/control.sock from the current directory, as under `make run`."""
    busd = busd_factory(start=False)
    busd.extra_args += ["--control", str(busd.root / "var" / "run" / "control.sock")]
    busd.start()
    found = busdctl("rates", cwd=busd.root)
    assert found.returncode == 0, found.stderr
    elsewhere = busdctl("rates", cwd=tmp_path)
    assert elsewhere.returncode == 3
    assert "cannot talk to busd at ./var/run/control.sock (found via the default)" in (
        elsewhere.stderr
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("control = ", "not valid TOML"),
        ("control = 5\nmetrics = 5\npub_endpoint = 5\n", "must be a string"),
    ],
)
def test_a_configuration_file_that_cannot_be_used_is_a_usage_error(
    tmp_path: Path, text: str, problem: str
) -> None:
    config = tmp_path / "busd.toml"
    config.write_text(text)
    for argv in (("rates",), ("status",), ("pub", "t", "--schema", "s", "--version", "1")):
        result = busdctl(*argv, "--config", str(config), "--json")
        assert result.returncode == 2, (argv, result.stderr)
        assert problem in result.stderr
        assert json.loads(result.stdout)["error"]["code"] == "usage"
    missing = busdctl("rates", env={"BUSD_CONFIG": str(tmp_path / "none.toml")})
    assert missing.returncode == 2
    assert f"busd configuration {tmp_path / 'none.toml'}: No such file" in missing.stderr


def test_a_bind_address_becomes_one_to_connect_to() -> None:
    assert connect_address("0.0.0.0:7403") == "127.0.0.1:7403"
    assert connect_address("[::]:7403") == "[::1]:7403"
    assert connect_address("10.0.0.1:7403") == "10.0.0.1:7403"
    assert connect_endpoint("tcp://*:7401") == "tcp://127.0.0.1:7401"
    assert connect_endpoint("tcp://0.0.0.0:7401") == "tcp://127.0.0.1:7401"
    assert connect_endpoint("tcp://[::]:7401") == "tcp://[::1]:7401"
    assert connect_endpoint("ipc:///run/busd/pub") == "ipc:///run/busd/pub"


# -- an installed host ----------------------------------------------------------------------


def install(host: PrivateHost, tmp_path: Path) -> None:
    """deploy/README.md step 2, into the private host's /etc."""
    etc = host.path("/etc/busd")
    etc.mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "busd.toml.example", etc / "busd.toml")
    shutil.copy(REPO / "deploy" / "assertions.toml", etc / "assertions.toml")
    shutil.copytree(REPO / "schemas", etc / "schemas")
    (tmp_path / "state").mkdir()


def start_as_the_unit_does(host: PrivateHost, tmp_path: Path) -> None:
    """ExecStart and the Environment= lines of deploy/systemd/busd.service; the state
    directory (StateDirectory=busd) is a temporary one, /run/busd is RuntimeDirectory.
    BUSD_WARMUP=0 skips the example's 2 s warm-up: finding busd is what is tested here, the
    warm-up has tests of its own (test_warmup.py, test_ops_systemd.py)."""
    host.path("/run/busd").mkdir(parents=True)
    log = open(tmp_path / "busd.log", "wb")  # noqa: SIM115 - closed with the process
    host.popen(
        [
            "env",
            f"BUSD_VAR_DIR={tmp_path / 'state'}",
            f"BUSD_RATES_DIR={tmp_path / 'state' / 'rates'}",
            "BUSD_SCHEMAS_DIR=/etc/busd/schemas",
            "BUSD_CONTROL=/run/busd/control.sock",
            "BUSD_WARMUP=0",
            str(BIN / "busd"),
            "--config",
            "/etc/busd/busd.toml",
        ],
        stdout=log,
        stderr=log,
    )
    log.close()


def bare(
    host: PrivateHost, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """busdctl by its absolute path, as an operator without the venv on PATH runs it: no
    BUSD_* variables, PATH=/usr/bin:/bin, in /."""
    return host.run([BUSDCTL, *args], env={"PATH": "/usr/bin:/bin"}, stdin=stdin)


def test_on_an_installed_host_busdctl_needs_no_flag(tmp_path: Path) -> None:
    with private_host(tmp_path / "host") as host:
        install(host, tmp_path)
        start_as_the_unit_does(host, tmp_path)
        deadline = time.monotonic() + 20
        while (ping := bare(host, "ping")).returncode != 0:
            assert ping.returncode in (3, 4), ping.stdout + ping.stderr  # starting, warming up
            assert time.monotonic() < deadline, f"never ready: {ping.stdout}"
            time.sleep(0.1)
        assert ping.stdout == "busd at 127.0.0.1:7403: ready\n"
        status = bare(host, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "  metrics     127.0.0.1:7403 (from /etc/busd/busd.toml)" in status.stdout
        assert "  control     /run/busd/control.sock (from /etc/busd/busd.toml)" in status.stdout
        assert status.stdout.endswith("status: OK\n")
        rates = bare(host, "rate", "set", "publish", "500")
        assert rates.returncode == 0, rates.stderr
        assert bare(host, "rates").returncode == 0
        sub = host.popen(
            [BUSDCTL, "sub", "release.", "--count", "1", "--timeout", "20"],
            env={"PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(
            lambda: '"subscribers_connected":1' in bare(host, "stats", "--json").stdout,
            timeout=10,
            what="busdctl sub connected",
        )
        pub = bare(
            host, "pub", "release.shop", "--schema", "release", "--version", "2", "--data", RELEASE
        )
        assert pub.returncode == 0, pub.stderr
        out, err = sub.communicate(timeout=20)
        assert sub.returncode == 0, err
        assert json.loads(out)["data"]["cmd"] == "bin/web"


def test_without_a_configuration_file_the_units_control_socket_is_found(tmp_path: Path) -> None:
    with private_host(tmp_path / "host") as host:
        install(host, tmp_path)
        start_as_the_unit_does(host, tmp_path)
        wait_for(lambda: bare(host, "ping").returncode == 0, timeout=20, interval=0.1, what="ready")
        host.path("/etc/busd/busd.toml").unlink()  # busd has read it; busdctl cannot
        rates = bare(host, "rates", "--json")
        assert rates.returncode == 0, rates.stderr
        assert json.loads(rates.stdout)["limits"] == []
        gone = bare(host, "rates", "--control", "/run/busd/none.sock")
        assert gone.returncode == 3
