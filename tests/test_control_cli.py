"""busdctl rates / rate / schemas and ControlClient against a real control socket server."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from busd.control.rates_dir import RatesDir
from busd.control.server import ControlServer, rate_handlers
from busd.kernel.buckets import RateTable
from busd_client.control import ControlClient, ControlError, ControlUnavailable

pytestmark = pytest.mark.timeout(30)
BUSDCTL = str(Path(sys.executable).parent / "busdctl")


class Served:
    def __init__(self, root: Path, idle_timeout: float):
        self.root = root
        self.table = RateTable()
        self.rates = RatesDir(
            root / "rates", lambda limits, _: self.table.configure(limits, time.monotonic())
        )
        self.path = root / "run" / "control.sock"
        self.calls: list[str] = []

        async def schemas_list(args: dict[str, Any]) -> dict[str, Any]:
            self.calls.append("schemas.list")
            return {
                "dir": "schemas",
                "loaded_at": 1_800_000_000.5,
                "schemas": [
                    {"name": "release", "versions": [1, 2], "retired": [1]},
                    {"name": "instance-state", "versions": [1], "retired": []},
                ],
            }

        async def schemas_reload(args: dict[str, Any]) -> dict[str, Any]:
            self.calls.append("schemas.reload")
            return {"loaded": 2, "errors": []}

        self.server = ControlServer(
            self.path,
            {
                **rate_handlers(self.table, self.rates),
                "schemas.list": schemas_list,
                "schemas.reload": schemas_reload,
            },
            idle_timeout=idle_timeout,
        )


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    root = Path(tempfile.mkdtemp(prefix="busd-cli-"))  # short: socket paths max 107 bytes
    s = Served(root, idle_timeout=0.5)
    await s.rates.start()
    await s.server.start()
    yield s
    await s.server.close()
    s.rates.close()
    shutil.rmtree(root, ignore_errors=True)


async def busdctl(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        BUSDCTL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_rate_set_writes_the_file_and_rates_lists_it(served: Served) -> None:
    control = str(served.path)
    status, out, _ = await busdctl(
        "rate", "set", "publish.release", "500", "--burst", "50", "--control", control
    )
    assert status == 0
    assert out == (
        f"publish.release: 500/s, burst 50 (written to {served.rates.path / 'publish.release'})\n"
    )
    assert (served.rates.path / "publish.release").read_text() == "500 50\n"
    status, out, _ = await busdctl("rate", "set", "publisher.deployer", "0", "--control", control)
    assert (status, out.split(" (")[0]) == (0, "publisher.deployer: disabled")
    status, out, _ = await busdctl("rates", "--control", control)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"rates directory: {served.rates.path}"
    assert lines[1].split() == [
        "KEY",
        "RATE/S",
        "BURST",
        "TOKENS",
        "THROTTLED(60s)",
        "THROTTLED",
        "DISABLED(60s)",
        "DISABLED",
    ]
    assert lines[2].split() == ["publish.release", "500", "50", "50", "0", "0", "0", "0"]
    assert lines[3].split() == [
        "publisher.deployer",
        "0",
        "(disabled)",
        "1",
        "0",
        "0",
        "0",
        "0",
        "0",
    ]


async def test_rates_json_is_the_reply_for_scripts(served: Served) -> None:
    await busdctl("rate", "set", "publish", "10", "--control", str(served.path))
    (served.rates.path / "publish.x").write_text("-5\n")
    await served.rates.refresh()
    status, out, _ = await busdctl("rates", "--json", "--control", str(served.path))
    assert status == 4  # listed, but a rates file is refused
    reply = json.loads(out)
    assert [(r["key"], r["rate"], r["burst"]) for r in reply["limits"]] == [("publish", 10.0, 10.0)]
    assert [(e["file"], e["kind"]) for e in reply["errors"]] == [("publish.x", "content")]


async def test_rates_shows_rate_file_problems_readably_and_exits_4_while_one_is_refused(
    served: Served,
) -> None:
    (served.rates.path / "publish").write_text("nan\n")
    await served.rates.refresh()
    status, out, _ = await busdctl("rates", "--control", str(served.path))
    assert status == 4
    assert "no limits: publishing is unlimited" in out
    assert "rates directory problems (last good values stay in force):" in out
    [row] = [line for line in out.splitlines() if line.startswith("publish ")]
    assert row.split()[:3] == ["publish", "content", "1"]
    assert 'got "nan\\n"' in row  # the content as text, not a Python repr
    assert "b'" not in out
    (served.rates.path / "publish").write_text("5\n")
    await served.rates.refresh()
    assert (await busdctl("rates", "--control", str(served.path)))[0] == 0


async def test_rate_clear_reports_whether_a_limit_was_removed(served: Served) -> None:
    control = str(served.path)
    await busdctl("rate", "set", "publish", "0", "--control", control)
    assert (await busdctl("rate", "clear", "publish", "--control", control))[:2] == (
        0,
        "publish: cleared, now unlimited\n",
    )
    assert (await busdctl("rate", "clear", "publish", "--control", control))[:2] == (
        0,
        "publish: had no limit\n",
    )
    status, out, _ = await busdctl("rate", "clear", "publish", "--json", "--control", control)
    assert (status, json.loads(out)) == (0, {"key": "publish", "cleared": False})


@pytest.mark.parametrize(
    "argv",
    [
        ("rate", "set", "other", "5"),
        ("rate", "set", "publish", "nan"),
        ("rate", "set", "publish", "1_000"),
        ("rate", "set", "publish", "5", "--burst", "0"),
        ("rate", "clear", "publish/x"),
    ],
)
async def test_an_argument_busd_refuses_as_bad_exits_2_naming_the_error_code(
    served: Served, argv: tuple[str, ...]
) -> None:
    status, out, err = await busdctl(*argv, "--control", str(served.path))
    assert (status, out) == (2, "")
    assert err.startswith("busdctl: rates.") and err.rstrip().endswith("(bad_argument)")
    assert list(served.rates.path.iterdir()) == []
    status, out, _ = await busdctl(*argv, "--control", str(served.path), "--json")
    assert status == 2
    assert json.loads(out)["error"]["code"] == "bad_argument"


async def test_a_command_busd_cannot_carry_out_exits_1(served: Served) -> None:
    """The rates directory replaced by a file: busd answers io_error, not a usage problem."""
    shutil.rmtree(served.rates.path)
    served.rates.path.write_text("not a directory\n")
    status, out, err = await busdctl("rate", "set", "publish", "5", "--control", str(served.path))
    assert (status, out) == (1, "")
    assert err.rstrip().endswith("(io_error)")


async def test_schemas_lists_and_reload_reloads(served: Served) -> None:
    status, out, _ = await busdctl("schemas", "--control", str(served.path))
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "dir: schemas"
    loaded_at = datetime.datetime.fromtimestamp(1_800_000_000.5)
    assert lines[1] == f"loaded_at: {loaded_at:%Y-%m-%d %H:%M:%S}"
    assert lines[3].split() == ["NAME", "VERSIONS", "RETIRED"]
    assert lines[4].split() == ["release", "1,", "2", "1"]
    status, out, _ = await busdctl("schemas", "reload", "--control", str(served.path))
    assert (status, out) == (0, "loaded: 2\nerrors: (none)\n")
    status, out, _ = await busdctl("schemas", "--json", "--control", str(served.path))
    assert json.loads(out)["schemas"][1]["name"] == "instance-state"
    assert served.calls == ["schemas.list", "schemas.reload", "schemas.list"]


async def test_the_control_path_comes_from_busd_control_in_the_environment(served: Served) -> None:
    status, _, _ = await busdctl("rates", env={"BUSD_CONTROL": str(served.path)})
    assert status == 0


@pytest.mark.parametrize(
    "argv",
    [("rates",), ("rate", "set", "publish", "5"), ("rate", "clear", "publish"), ("schemas",)],
)
async def test_an_unreachable_busd_exits_3_with_a_clear_message_json_under_json(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    missing = str(tmp_path / "none.sock")
    status, out, err = await busdctl(*argv, "--control", missing)
    assert (status, out) == (3, "")
    assert "cannot talk to busd at" in err and "No such file" in err
    status, out, err = await busdctl(*argv, "--control", missing, "--json")
    assert status == 3
    answer = json.loads(out)
    assert answer["ok"] is False and answer["error"]["code"] == "unavailable"
    assert answer["error"]["message"].startswith(f"cannot talk to busd at {missing}")


async def test_control_client_raises_typed_errors_and_reconnects_after_idle_close(
    served: Served,
) -> None:
    def session() -> None:
        with ControlClient(served.path, timeout=5) as client:
            assert client.call("rates.set", key="publish", rate="7") == {
                "key": "publish",
                "rate": 7.0,
                "burst": 7.0,
                "file": str(served.rates.path / "publish"),
            }
            with pytest.raises(ControlError) as refused:
                client.call("nope")
            assert refused.value.code == "unknown_command"
            time.sleep(1.0)  # past the server's 0.5 s idle timeout: the connection is closed
            assert client.call("rates.list")["limits"][0]["key"] == "publish"

    await asyncio.to_thread(session)


def test_control_client_reports_an_absent_busd_as_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ControlUnavailable) as caught, ControlClient(tmp_path / "x.sock") as c:
        c.call("rates.list")
    assert caught.value.code == "unavailable"


@pytest.mark.timeout(30)
async def test_schemas_json_of_a_real_busd_gives_numbers_as_numbers_and_lists_as_lists(
    busd_factory: Any,
) -> None:
    busd = busd_factory()
    pub = await asyncio.to_thread(_publish_invalid, busd.pub_endpoint)
    assert pub == "invalid"
    status, out, _ = await busdctl("schemas", "--json", "--control", busd.control)
    assert status == 0
    rows = {(r["schema"], r["version"]): r for r in json.loads(out)["versions"]}
    release = rows[("release", 2)]
    assert release["topics"] == ["release."]
    assert release["rejected"] == 1 and release["rejected_by_code"] == {"invalid": 1}
    assert isinstance(release["accepted"], int)
    status, out, _ = await busdctl("schemas", "--control", busd.control)
    [line] = [x for x in out.splitlines() if x.split()[:2] == ["release", "2"]]
    assert line.split()[2:] == ["active", "release.", "0", "1", "invalid=1"]


def _publish_invalid(endpoint: str) -> str:
    from busd_client import Publisher, Rejected

    with Publisher(endpoint, name="cli") as pub:
        try:
            pub.publish_wait("release.x", "release", 2, {"slug": "s", "cmd": 1, "env": {}})
        except Rejected as exc:
            return exc.code
    return "accepted"
