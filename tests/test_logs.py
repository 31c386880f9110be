"""Every line busd writes is one structured event: its own loggers, libraries', asyncio's
loop errors, warnings and uncaught exceptions; under the journal each line carries its
syslog priority so `journalctl -p warning` works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BusdProcess, wait_for

from busd.logs import priority

# Runs in a fresh interpreter: logs.setup changes process-wide state (root logger, hooks).
SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, threading, warnings
    from busd import logs

    logs.setup("json", "info")
    logging.getLogger("busd.test").info("own event", extra={"n": 1})
    logging.getLogger("somelibrary").error("a library's error")
    logging.getLogger("somelibrary").info("below the library threshold")
    warnings.warn("something deprecated", DeprecationWarning, stacklevel=1)

    def broken_callback():
        raise ValueError("raised in a callback")

    async def main():
        loop = asyncio.get_running_loop()
        with logs.catch_loop_errors(loop):
            loop.call_soon(broken_callback)
            await asyncio.sleep(0.01)

    asyncio.run(main())
    thread = threading.Thread(target=lambda: 1 / 0, name="worker")
    thread.start()
    thread.join()
    raise RuntimeError("nothing caught this")
    """
)


@pytest.mark.timeout(30)
def test_every_source_of_log_lines_goes_through_the_structured_handler() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"},
    )
    assert proc.returncode == 1  # the uncaught exception still ends the process
    lines = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    by_event = {line["event"]: line for line in lines}
    assert by_event["own event"]["n"] == 1 and by_event["own event"]["logger"] == "busd.test"
    assert by_event["a library's error"]["logger"] == "somelibrary"
    assert "below the library threshold" not in by_event
    (warning,) = [line for line in lines if line["logger"] == "py.warnings"]
    assert "something deprecated" in warning["event"] and warning["level"] == "warning"
    (loop_error,) = [line for line in lines if line["logger"] == "busd.asyncio"]
    assert loop_error["event"].startswith("Exception in callback")
    assert "ValueError: raised in a callback" in loop_error["exc"]
    assert "broken_callback" in loop_error["handle"]
    thread = by_event["uncaught exception in a thread"]
    assert thread["thread_name"] == "worker" and "ZeroDivisionError" in thread["exc"]
    uncaught = by_event["uncaught exception"]
    assert uncaught["level"] == "critical" and "nothing caught this" in uncaught["exc"]


def test_priorities_follow_sd_daemon() -> None:
    assert [priority(level) for level in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]


def _run_busd(busd: BusdProcess, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """busd with stderr to its log file; ``env`` may name that file as the journal."""
    with open(busd.log_path, "ab") as log:
        return subprocess.Popen(
            busd.argv(), stdout=log, stderr=log, cwd=busd.root, env={**os.environ, **env}
        )


def _wait_lines(path: Path, proc: subprocess.Popen[bytes], needle: str) -> list[str]:
    def found() -> list[str] | None:
        assert proc.poll() is None, path.read_text()
        lines = path.read_text().splitlines()
        return lines if any(needle in line for line in lines) else None

    result: list[str] = wait_for(found, timeout=10, what=needle)
    return result


@pytest.mark.timeout(30)
def test_under_the_journal_each_line_starts_with_its_priority(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(start=False, extra_args=("--schema-checks", "off"))
    busd.log_path.touch()
    st = busd.log_path.stat()
    proc = _run_busd(busd, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        lines = _wait_lines(busd.log_path, proc, '"event":"ready"')
    finally:
        proc.terminate()
        proc.wait(10)
    events = {}
    for line in lines:
        assert line[:1] == "<" and line[2:4] == ">{", line
        events[json.loads(line[3:])["event"]] = int(line[1])
    assert events["ready"] == 6
    assert events["schema checks are off: payloads are not checked"] == 4


@pytest.mark.timeout(30)
def test_a_journal_stream_that_is_not_stderr_gets_plain_lines(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """A child that inherited JOURNAL_STREAM but writes to a file: no prefixes."""
    busd = busd_factory(start=False)
    other = tmp_path / "elsewhere"
    other.touch()
    st = other.stat()
    proc = _run_busd(busd, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        lines = _wait_lines(busd.log_path, proc, '"event":"ready"')
    finally:
        proc.terminate()
        proc.wait(10)
    assert all(line.startswith("{") for line in lines), lines
