"""`busd --check-config` refuses what start-up refuses, binds nothing, prints strict JSON, and
the exit status tells a bad configuration (78) from a failure to bind (69) and from usage (2).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BIN, REPO, BusdProcess

pytestmark = pytest.mark.timeout(30)


def check_config(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "busd"), "--check-config", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        cwd=cwd,
    )


def start(busd: BusdProcess) -> tuple[int, list[dict[str, object]]]:
    """Run busd to its exit (it is expected to fail start-up); its status and log lines."""
    with open(busd.log_path, "ab") as log:
        proc = subprocess.run(
            busd.argv(), stdout=log, stderr=log, cwd=busd.root, timeout=20, check=False
        )
    return proc.returncode, busd.logs(since_start=False)


def _missing_schemas(tmp: Path) -> list[str]:
    return ["--schemas-dir", str(tmp / "no-such-dir")]


def _broken_assertions(tmp: Path) -> list[str]:
    path = tmp / "assertions.toml"
    path.write_text('[assertions.latency]\nexpr = "p99_latency < 50"\n')
    return ["--assertions", str(path)]


def _missing_assertions(tmp: Path) -> list[str]:
    return ["--assertions", str(tmp / "absent.toml")]


def _rates_dir_is_a_file(tmp: Path) -> list[str]:
    (tmp / "rates-file").write_text("5\n")
    return ["--rates-dir", str(tmp / "rates-file")]


def _var_dir_under_a_file(tmp: Path) -> list[str]:
    (tmp / "plain").write_text("")
    return ["--var-dir", str(tmp / "plain" / "var")]


def _control_path_too_long(tmp: Path) -> list[str]:
    return ["--control", str(tmp / ("c" * 120) / "control.sock")]


def _ipc_endpoint_is_a_file(tmp: Path) -> list[str]:
    (tmp / "pub.sock").write_text("")
    return ["--pub-endpoint", f"ipc://{tmp}/pub.sock"]


def _metrics_host_unknown(tmp: Path) -> list[str]:
    return ["--metrics", "no-such-host.invalid:7403"]


# name, arguments made under a temp dir, what the message names
BAD: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("missing schemas directory", _missing_schemas, "schemas_dir"),
    ("broken assertions file", _broken_assertions, "assertions.latency.expr"),
    ("missing assertions file", _missing_assertions, "absent.toml"),
    ("rates dir is a file", _rates_dir_is_a_file, "rates_dir"),
    ("var dir under a file", _var_dir_under_a_file, "var_dir"),
    ("control path too long", _control_path_too_long, "control"),
    ("ipc endpoint is a file", _ipc_endpoint_is_a_file, "pub_endpoint"),
    ("metrics host unknown", _metrics_host_unknown, "metrics"),
]


@pytest.mark.parametrize(("name", "make", "names"), BAD, ids=[b[0] for b in BAD])
def test_check_config_and_start_up_both_refuse_a_bad_configuration_with_78(
    busd_factory: Callable[..., BusdProcess],
    tmp_path: Path,
    name: str,
    make: Callable[[Path], list[str]],
    names: str,
) -> None:
    """The same problem: --check-config exits 78 naming it, and so does a real start-up
    (``startup failed``), so the unit's ExecStartPre catches what start-up would refuse."""
    args = make(tmp_path)
    checked = check_config(*args, cwd=REPO)
    assert checked.returncode == 78, checked.stderr
    assert names in checked.stderr and checked.stdout == ""
    busd = busd_factory(start=False, extra_args=tuple(args))
    status, lines = start(busd)
    assert status == 78
    failed = [line for line in lines if line.get("event") == "startup failed"]
    assert failed and names in str(failed[0]["error"]), failed
    assert failed[0]["exit_status"] == 78


@pytest.mark.parametrize(
    ("setting", "value"),
    [("drain_timeout", "nan"), ("warmup", "inf"), ("linger", "-inf"), ("restart_window", "NaN")],
)
def test_non_finite_numbers_are_refused(setting: str, value: str) -> None:
    checked = check_config(f"--{setting.replace('_', '-')}={value}", cwd=REPO)
    assert checked.returncode == 78
    assert setting in checked.stderr and "finite" in checked.stderr


def test_a_non_finite_number_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "busd.toml"
    config.write_text("warmup = inf\n")
    checked = check_config("--config", str(config), cwd=REPO)
    assert checked.returncode == 78 and "warmup" in checked.stderr


def test_a_valid_configuration_prints_strict_json(tmp_path: Path) -> None:
    """Every value is JSON (no NaN or Infinity tokens): ``json.loads`` with those refused."""
    checked = check_config("--var-dir", str(tmp_path / "var"), "--warmup", "1.5", cwd=REPO)
    assert checked.returncode == 0, checked.stderr

    def refuse(token: str) -> object:
        raise AssertionError(f"non-JSON constant {token}")

    effective = json.loads(checked.stdout, parse_constant=refuse)
    assert effective["warmup"] == 1.5


def test_check_config_binds_nothing_so_a_taken_port_passes_it_and_fails_start_up_with_69(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """A port in use is not a configuration error: it may be free on the next try (69 is
    not in RestartPreventExitStatus), and --check-config cannot know, binding nothing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoint = f"tcp://127.0.0.1:{port}"
        checked = check_config("--pub-endpoint", endpoint, "--var-dir", str(tmp_path), cwd=REPO)
        assert checked.returncode == 0, checked.stderr
        busd = busd_factory(start=False, extra_args=("--pub-endpoint", endpoint))
        status, lines = start(busd)
    assert status == 69
    failed = [line for line in lines if line.get("event") == "startup failed"]
    assert failed and failed[0]["exit_status"] == 69


def test_an_unknown_flag_is_a_usage_error_with_2() -> None:
    checked = check_config("--no-such-flag")
    assert checked.returncode == 2
    assert "unrecognized arguments" in checked.stderr


@pytest.mark.parametrize("value", ["0", "65537"])
def test_max_batch_outside_1_to_65536_is_refused(value: str) -> None:
    """A batch of 0 messages means nothing; over 65,536 (busd_protocol.frames.MAX_BATCH_LIMIT)
    an over-long publish's answer would grow without a bound."""
    checked = check_config(f"--max-batch={value}", cwd=REPO)
    assert checked.returncode == 78, checked.stderr
    assert "max_batch" in checked.stderr
