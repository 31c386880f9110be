"""The real App object: a peripheral task crashing past its budget ends busd with exit 70."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import REPO

from busd.app import EXIT_SOFTWARE, App
from busd.config import Config


def _config(tmp_path: Path) -> Config:
    return Config(
        pub_endpoint=f"ipc://{tmp_path}/pub.sock",
        sub_endpoint=f"ipc://{tmp_path}/sub.sock",
        control=str(tmp_path / "run" / "control.sock"),
        rates_dir=str(tmp_path / "rates"),
        schemas_dir=str(REPO / "schemas"),
        metrics="off",
        var_dir=str(tmp_path / "var"),
        restart_budget=2,
        restart_window=60.0,
        drain_timeout=0.5,
        linger=0.1,
    ).validate()


@pytest.mark.timeout(30)
async def test_a_task_crashing_past_its_restart_budget_drains_and_exits_70(tmp_path: Path) -> None:
    app = App(_config(tmp_path))
    crashes = 0

    async def flaky() -> None:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("peripheral failure")

    app.supervisor.add("flaky", flaky)
    status = await asyncio.wait_for(app.serve(), 20)
    assert status == EXIT_SOFTWARE
    assert crashes == 3  # the first run and two restarts, then the budget is spent
    assert app.draining
    assert app.supervisor.restarts_total["flaky"] == 2  # restarts, not crashes


@pytest.mark.timeout(30)
async def test_a_task_that_crashes_once_is_restarted_and_busd_keeps_serving(tmp_path: Path) -> None:
    app = App(_config(tmp_path))
    restarted = asyncio.Event()
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("one-off failure")
        restarted.set()
        await asyncio.Event().wait()  # then serve for ever

    app.supervisor.add("once", once)
    serving = asyncio.create_task(app.serve())
    await asyncio.wait_for(restarted.wait(), 10)
    assert not serving.done() and not app.draining
    app.begin_drain()
    assert await asyncio.wait_for(serving, 10) == 0
