"""The pool file is read strictly: each kind of mistake is refused with the file, the broker
and the field named, and busdctl pool exits 2 on it without addressing any broker."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from busd_client.pool_file import PoolEntry, PoolFileError, load_pool, pool_from_args

pytestmark = pytest.mark.timeout(10)
BUSDCTL = str(Path(sys.executable).parent / "busdctl")

GOOD = """\
# Two brokers; bus2 has only the required fields.
[[broker]]
name = "bus1"
pub_endpoint = "tcp://10.0.0.1:7401"
sub_endpoint = "tcp://10.0.0.1:7402"
metrics = "10.0.0.1:7403"
control = "/run/busd/control.sock"
restart = "ssh bus1 sudo systemctl restart busd"

[[broker]]
name = "bus2"
pub_endpoint = "tcp://10.0.0.2:7401"
sub_endpoint = "tcp://10.0.0.2:7402"
"""


def broker(name: str = "bus3", **fields: object) -> str:
    values: dict[str, object] = {
        "name": name,
        "pub_endpoint": f"tcp://{name}:7401",
        "sub_endpoint": f"tcp://{name}:7402",
        **fields,
    }
    lines = ["[[broker]]"] + [
        f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else f"{k} = {str(v).lower()}"
        for k, v in values.items()
        if v is not None
    ]
    return "\n".join(lines) + "\n"


def refused(tmp_path: Path, text: str) -> PoolFileError:
    path = tmp_path / "pool.toml"
    path.write_text(text)
    with pytest.raises(PoolFileError) as caught:
        load_pool(path)
    assert caught.value.file == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    return caught.value


def test_a_good_pool_file_loads_every_broker_in_order(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(GOOD)
    assert load_pool(path) == [
        PoolEntry(
            "bus1",
            "tcp://10.0.0.1:7401",
            "tcp://10.0.0.1:7402",
            "10.0.0.1:7403",
            "/run/busd/control.sock",
            "ssh bus1 sudo systemctl restart busd",
        ),
        PoolEntry("bus2", "tcp://10.0.0.2:7401", "tcp://10.0.0.2:7402"),
    ]


def test_the_shipped_example_pool_file_loads() -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "pool.toml.example"
    assert [e.name for e in load_pool(example)] == ["bus1", "bus2", "bus3"]


def test_an_unknown_key_in_a_broker_is_refused(tmp_path: Path) -> None:
    exc = refused(tmp_path, GOOD + broker(metric="h:1"))
    assert exc.reason.startswith("broker #3 ('bus3'): unknown key 'metric' (known: name,")


def test_an_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    exc = refused(tmp_path, "timeout = 5\n" + GOOD)
    assert "unknown top-level key 'timeout'" in exc.reason


def test_a_duplicate_broker_name_is_refused(tmp_path: Path) -> None:
    exc = refused(
        tmp_path, GOOD + broker("bus1", pub_endpoint="tcp://x:1", sub_endpoint="tcp://x:2")
    )
    assert exc.reason == "broker #3 ('bus1'): field 'name' duplicates broker #1 ('bus1'): 'bus1'"


def test_a_duplicate_address_is_refused(tmp_path: Path) -> None:
    exc = refused(tmp_path, GOOD + broker(control="/run/busd/control.sock"))
    assert exc.reason.startswith("broker #3 ('bus3'): field 'control' duplicates broker #1")


def test_a_missing_required_field_is_refused(tmp_path: Path) -> None:
    exc = refused(tmp_path, GOOD + broker(sub_endpoint=None))
    assert exc.reason == "broker #3 ('bus3'): missing required field 'sub_endpoint'"


def test_a_field_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    exc = refused(tmp_path, GOOD + broker(metrics=7403))
    assert exc.reason == "broker #3 ('bus3'): field 'metrics' must be a string, not int"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("name", "bus 3", "must be 1-64 characters"),
        ("pub_endpoint", "10.0.0.3:7401", "must be a ZeroMQ endpoint"),
        ("metrics", "http://10.0.0.3:7403", "must be HOST:PORT"),
        ("metrics", "10.0.0.3:70000", "must be HOST:PORT"),
        ("restart", "", "is empty"),
    ],
)
def test_a_bad_value_is_refused(tmp_path: Path, field: str, value: str, problem: str) -> None:
    exc = refused(tmp_path, GOOD + broker(**{field: value}))
    assert f"field {field!r} {problem}" in exc.reason


def test_a_file_without_brokers_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, "# nothing yet\n").reason.startswith("no brokers")
    assert refused(tmp_path, "broker = []\n").reason.startswith("no brokers")


def test_broker_that_is_not_an_array_of_tables_is_refused(tmp_path: Path) -> None:
    assert "array of tables" in refused(tmp_path, '[broker]\nname = "x"\n').reason


def test_invalid_toml_is_refused_with_its_line(tmp_path: Path) -> None:
    exc = refused(tmp_path, GOOD + 'name = "bus1"\n')  # the same key twice in one table
    assert exc.reason.startswith("not valid TOML:") and "line 14" in exc.reason


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PoolFileError, match="cannot read: No such file or directory"):
        load_pool(tmp_path / "absent.toml")


def test_pool_from_args_takes_the_option_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(GOOD)
    monkeypatch.delenv("BUSD_POOL", raising=False)
    with pytest.raises(PoolFileError, match="no pool file: give --pool FILE or set BUSD_POOL"):
        pool_from_args(argparse.Namespace(pool=None))
    monkeypatch.setenv("BUSD_POOL", str(path))
    assert len(pool_from_args(argparse.Namespace(pool=None))) == 2
    assert pool_from_args(argparse.Namespace(pool=str(path)))[0].name == "bus1"


def test_busdctl_pool_exits_2_on_a_bad_pool_file_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(GOOD + broker(metrics=7403))
    done = subprocess.run(
        [BUSDCTL, "pool", "status", "--pool", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"busdctl: {path}: broker #3 ('bus3'): field 'metrics' must be a string, not int\n"
    )
