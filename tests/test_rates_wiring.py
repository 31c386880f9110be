"""RateControl: the rates directory drives Admission's decisions through the RateTable."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import decide

from busd.control import RateControl
from busd.kernel.admission import Admission
from busd_protocol.codes import Code

pytestmark = pytest.mark.timeout(10)


def envelope(topic: str, publisher: str = "deployer") -> dict[str, Any]:
    return {
        "topic": topic,
        "schema": "release",
        "version": 2,
        "id": "1",
        "publisher": publisher,
        "ts": 0,
        "data": {},
    }


@pytest.fixture
def rates_path() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="busd-rates-"))
    yield path / "rates"
    shutil.rmtree(path)


async def test_a_file_in_the_rates_directory_changes_admission(rates_path: Path) -> None:
    now = [100.0]
    admission = Admission()
    control = RateControl(rates_path, admission, clock=lambda: now[0])
    await control.start()
    assert os.listdir(rates_path) == []  # created, empty
    assert decide(admission, "release.a", envelope("release.a"), now[0]) is None
    (rates_path / "publish.release").write_text("0\n")
    await control.watcher.refresh()
    reject = decide(admission, "release.a", envelope("release.a"), now[0])
    assert reject is not None and reject.code is Code.DISABLED
    assert decide(admission, "other", envelope("other"), now[0]) is None
    await control.handlers()["rates.set"]({"key": "publish.release", "rate": "2", "burst": "1"})
    assert decide(admission, "release.a", envelope("release.a"), now[0]) is None
    limited = decide(admission, "release.a", envelope("release.a"), now[0])
    assert limited is not None and limited.extra == {
        "key": "publish.release",
        "retry_after_ms": 500,
    }
    now[0] += 0.5
    assert decide(admission, "release.a", envelope("release.a"), now[0]) is None
    assert control.statistics().throttled_total == 1
    assert control.statistics().directory.changes_total == 2
    control.close()


async def test_a_wall_clock_jump_changes_no_decision(
    rates_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same traffic, same monotonic times; the second run with the wall clock a year off."""

    async def run() -> list[object]:
        now = [1024.0]
        admission = Admission()
        control = RateControl(rates_path, admission, clock=lambda: now[0])
        await control.start()
        decisions: list[object] = []
        for i in range(300):
            now[0] = 1024.0 + i / 128
            reject = decide(admission, "release.a", envelope("release.a"), now[0])
            decisions.append(None if reject is None else (reject.code, reject.extra))
        control.close()
        return decisions

    os.makedirs(rates_path)
    (rates_path / "publish").write_text("20 5\n")
    (rates_path / "publisher.deployer").write_text("40 2\n")
    baseline = await run()
    assert {d[0] for d in baseline if isinstance(d, tuple)} == {Code.RATE_LIMITED}
    for offset in (365 * 86400.0, -365 * 86400.0):
        monkeypatch.setattr(time, "time", lambda o=offset, f=time.time: f() + o)
        monkeypatch.setattr(time, "time_ns", lambda o=offset, f=time.time_ns: f() + int(o * 1e9))
        assert await run() == baseline
        monkeypatch.undo()
