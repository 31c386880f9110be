"""SchemaControl: start-up load, reloads that swap whole sets between messages, refusal of
broken or incompatible sets while the previous one keeps serving, deprecated-use logging."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import decide

from busd.control.schemas_dir import SchemaControl
from busd.control.server import ControlError
from busd.kernel.admission import Admission
from busd_protocol.codes import Code
from busd_protocol.schemas import SchemaLoadError

REPO_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
pytestmark = pytest.mark.timeout(30)
V2 = {"slug": "https://apps.example/shop/1", "cmd": "bin/web", "env": {}, "flag": "x"}


def env(version: int, data: dict[str, Any], publisher: str = "deployer") -> dict[str, Any]:
    return {
        "topic": "release.shop",
        "schema": "release",
        "version": version,
        "id": "m",
        "publisher": publisher,
        "ts": 1,
        "data": data,
    }


@pytest.fixture
def schemas_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(REPO_SCHEMAS, tmp_path / "schemas"))


def add_release_v3(directory: Path) -> None:
    """release v3: v2 plus an optional `region` (a compatible change)."""
    v3 = json.loads((directory / "release" / "v2.json").read_text())
    v3["properties"]["region"] = {"type": "string"}
    (directory / "release" / "v3.json").write_text(json.dumps(v3))
    meta = json.loads((directory / "release" / "meta.json").read_text())
    meta["versions"]["3"] = "active"
    (directory / "release" / "meta.json").write_text(json.dumps(meta))


def test_load_installs_the_gate_in_admission(schemas_dir: Path) -> None:
    """After load, Admission judges payloads by the directory's schemas."""
    admission = Admission()
    control = SchemaControl(schemas_dir, admission)
    control.load()
    assert decide(admission, "release.shop", env(2, V2), 0.0) is None
    reject = decide(admission, "release.shop", env(1, V2), 0.0)
    assert reject is not None and reject.code is Code.INVALID


def test_load_of_a_broken_directory_fails_start_up(schemas_dir: Path) -> None:
    (schemas_dir / "release" / "v2.json").write_text("{")
    with pytest.raises(SchemaLoadError, match=r"v2\.json: invalid JSON"):
        SchemaControl(schemas_dir, Admission()).load()


async def test_reload_installs_a_new_version_and_keeps_counters(schemas_dir: Path) -> None:
    """A version added on disk is accepted after a reload; counts since start carry over."""
    admission = Admission()
    control = SchemaControl(schemas_dir, admission)
    control.load()
    assert decide(admission, "release.shop", env(2, V2), 0.0) is None
    reject = decide(admission, "release.shop", env(3, V2), 0.0)
    assert reject is not None and reject.code is Code.UNKNOWN_VERSION
    add_release_v3(schemas_dir)
    assert await control.reload() == {"loaded": 2, "versions": 4, "errors": []}
    assert decide(admission, "release.shop", env(3, {**V2, "region": "eu"}), 0.0) is None
    versions = {(v["schema"], v["version"]): v for v in control.listing()["versions"]}
    assert versions["release", 2]["accepted"] == 1
    assert versions["release", 3]["accepted"] == 1
    assert control.statistics().reloads == 1


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("bad_json", "v3.json: invalid JSON"),
        ("unknown_keyword", "v3.json: #: unsupported keyword '$dynamicRef'"),
        ("incompatible", "release v3: data.cmd: type changed from string to int"),
        ("no_status", "v3.json: version 3 has no status in meta.json"),
    ],
)
async def test_broken_reload_is_refused_and_previous_set_serves(
    schemas_dir: Path, breakage: str, message: str
) -> None:
    """Bad JSON, an unsupported keyword, an incompatible version or missing metadata refuse
    the whole new set with the file and reason; the loaded set keeps judging."""
    admission = Admission()
    control = SchemaControl(schemas_dir, admission)
    control.load()
    v3 = json.loads((schemas_dir / "release" / "v2.json").read_text())
    if breakage == "unknown_keyword":
        v3["$dynamicRef"] = "#x"
    if breakage == "incompatible":
        v3["properties"]["cmd"] = {"type": "integer"}
    path = schemas_dir / "release" / "v3.json"
    path.write_text("{" if breakage == "bad_json" else json.dumps(v3))
    if breakage != "no_status":
        meta = json.loads((schemas_dir / "release" / "meta.json").read_text())
        meta["versions"]["3"] = "active"
        (schemas_dir / "release" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ControlError) as caught:
        await control.handlers()["schemas.reload"]({})
    assert caught.value.code == "schemas_refused"
    assert message in caught.value.message
    assert message in control.listing()["last_error"]
    assert control.statistics().reload_failures == 1
    assert decide(admission, "release.shop", env(2, V2), 0.0) is None
    reject = decide(admission, "release.shop", env(3, V2), 0.0)
    assert reject is not None and reject.code is Code.UNKNOWN_VERSION


async def test_sighup_hook_reloads_in_the_background(schemas_dir: Path) -> None:
    admission = Admission()
    control = SchemaControl(schemas_dir, admission)
    control.load()
    add_release_v3(schemas_dir)
    control.request_reload()
    deadline = asyncio.get_running_loop().time() + 10
    while control.reloads == 0:
        assert asyncio.get_running_loop().time() < deadline, "reload did not happen"
        await asyncio.sleep(0.01)
    assert decide(admission, "release.shop", env(3, V2), 0.0) is None


async def test_reload_under_load_loses_and_misjudges_nothing(schemas_dir: Path) -> None:
    """20,000 messages are judged on the loop while reloads run in threads: a version is
    added, a broken file is dropped in (refused), then removed. Every message gets exactly
    one verdict, and that verdict is the one of the set installed when it was judged."""
    admission = Admission()
    control = SchemaControl(schemas_dir, admission)
    control.load()
    assert control.gate is not None
    gate = control.gate
    verdicts: list[tuple[int, bool, Code | None]] = []
    # Checkpoints keep the stream from finishing before the reload threads: traffic flows
    # while each reload runs, and some messages surely land before and after each swap.
    installed, refused = asyncio.Event(), asyncio.Event()

    async def publish() -> None:
        for i in range(20_000):
            if i == 10_000:
                await asyncio.wait_for(installed.wait(), 10)
            if i == 15_000:
                await asyncio.wait_for(refused.wait(), 10)
            version = 3 if i % 2 else 2
            v3_loaded = gate.schemas.status("release", 3) is not None
            reject = decide(admission, "release.shop", env(version, V2), 0.0)
            verdicts.append((version, v3_loaded, None if reject is None else reject.code))
            if i % 100 == 0:
                await asyncio.sleep(0)  # a broker batch boundary: other tasks run here

    async def operate() -> None:
        await asyncio.sleep(0)
        add_release_v3(schemas_dir)
        await control.reload()
        installed.set()
        broken = schemas_dir / "instance-state" / "v2.json"
        broken.write_text('{"type": "object", "properties": ')
        with pytest.raises(SchemaLoadError, match=r"instance-state/v2\.json"):
            await control.reload()
        refused.set()
        broken.unlink()
        await control.reload()

    await asyncio.gather(publish(), operate())
    assert len(verdicts) == 20_000
    assert control.reloads == 2 and control.reload_failures == 1
    for version, v3_loaded, code in verdicts:
        expected = None if version == 2 or v3_loaded else Code.UNKNOWN_VERSION
        assert code == expected
    assert any(v3 for _, v3, _ in verdicts) and not all(v3 for _, v3, _ in verdicts)
    counts = {(v["schema"], v["version"]): v for v in control.listing()["versions"]}
    assert counts["release", 2]["accepted"] == 10_000
    assert counts["release", 3]["accepted"] == sum(1 for v, l3, _ in verdicts if v == 3 and l3)


def test_deprecated_use_is_logged_with_the_publisher_and_listed(
    schemas_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages of a deprecated version produce one warning per publisher per interval, and
    `schemas.list` names who sent them."""
    admission = Admission()
    control = SchemaControl(schemas_dir, admission)
    control.load()
    assert control.gate is not None
    v1 = {k: v for k, v in V2.items() if k != "flag"}
    for _ in range(3):
        # The gate as Admission calls it once it passes env["publisher"] (see SchemaGate).
        assert control.gate.check("release.shop", "release", 1, v1, "legacy-ci") is None
    with caplog.at_level(logging.WARNING, logger="busd.schemas"):
        control.log_deprecated()
        control.log_deprecated()  # nothing new: no second line
    lines = [r for r in caplog.records if r.getMessage() == "deprecated schema version in use"]
    assert len(lines) == 1
    fields = vars(lines[0])
    assert (fields["publisher"], fields["version"], fields["messages"]) == ("legacy-ci", 1, 3)
    listing = control.listing()
    assert [(p["publisher"], p["messages"]) for p in listing["deprecated_publishers"]] == [
        ("legacy-ci", 3)
    ]
    row = next(r for r in listing["versions"] if (r["schema"], r["version"]) == ("release", 1))
    assert (row["status"], row["accepted"]) == ("deprecated", 3)
