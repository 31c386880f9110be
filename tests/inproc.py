"""The real ``App`` in the test's own process and event loop, on ipc:// endpoints under a
temp directory: for what only an in-process test can see (fds, the exit status of
``serve``, a check that raises)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from conftest import REPO

from busd.app import App
from busd.config import Config


def app_config(tmp_path: Path, **overrides: Any) -> Config:
    """A configuration with every path under ``tmp_path`` and metrics off by default."""
    settings: dict[str, Any] = {
        "pub_endpoint": f"ipc://{tmp_path}/pub.sock",
        "sub_endpoint": f"ipc://{tmp_path}/sub.sock",
        "state_endpoint": f"ipc://{tmp_path}/state.sock",
        "control": str(tmp_path / "run" / "control.sock"),
        "rates_dir": str(tmp_path / "rates"),
        "schemas_dir": str(REPO / "schemas"),
        "metrics": "off",
        "var_dir": str(tmp_path / "var"),
        "restart_budget": 2,
        "restart_window": 60.0,
        "drain_timeout": 0.5,
        "linger": 0.1,
        "warmup": 0.0,
    }
    settings.update(overrides)
    return Config(**settings).validate()


async def until(condition: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Yield to the loop until ``condition()`` is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(app: App) -> AsyncIterator[asyncio.Task[int]]:
    """``app.serve()`` as a task, once its sockets are bound; drained and awaited on exit."""
    task = asyncio.create_task(app.serve())
    await until(lambda: app.broker.bound or task.done(), "busd to bind")
    try:
        yield task
    finally:
        if not task.done():
            app.begin_drain()
        await asyncio.wait_for(asyncio.shield(task), 20)
