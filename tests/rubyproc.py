"""Running the Ruby client (clients/ruby) from tests: is Ruby here, and run a script or a
minitest suite of it against a busd."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from conftest import REPO, BusdProcess

RUBY_DIR = REPO / "clients" / "ruby"
RUBY = shutil.which("ruby")
INSTALL = (
    "Debian: apt-get install ruby ruby-ffi-rzmq ruby-msgpack ruby-minitest (.ci/run installs them)"
)
_SUMMARY = re.compile(r"(\d+) runs, (\d+) assertions, (\d+) failures, (\d+) errors, (\d+) skips")


def missing() -> str | None:
    """Why the Ruby client cannot run here, or None."""
    if RUBY is None:
        return f"ruby is not installed; {INSTALL}"
    probe = subprocess.run(
        [RUBY, "-e", 'require "ffi-rzmq"; require "msgpack"; require "minitest"'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode:
        why = probe.stderr.strip()[:200]
        return f"ruby cannot load ffi-rzmq, msgpack and minitest ({why}); {INSTALL}"
    return None


def busd_env(busd: BusdProcess) -> dict[str, str]:
    """The variables test/test_helper.rb reads to find the busd under test."""
    return {
        **os.environ,
        "BUSD_TEST_PUB": busd.pub_endpoint,
        "BUSD_TEST_SUB": busd.sub_endpoint,
        "BUSD_TEST_CONTROL": busd.control,
        "BUSD_TEST_RATES_DIR": str(busd.rates_dir),
    }


def minitest(files: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> int:
    """Run the minitest files (paths under clients/ruby) and fail with their output unless
    every test ran and passed; returns how many ran."""
    assert RUBY is not None
    done = subprocess.run(
        [RUBY, "-Ilib", "-Itest", "test/run.rb", *files, "--", "--verbose"],
        cwd=RUBY_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    summary = _SUMMARY.search(output)
    assert done.returncode == 0 and summary is not None, output[-6000:]
    runs, _, failures, errors, skips = map(int, summary.groups())
    assert (failures, errors, skips) == (0, 0, 0), output[-6000:]
    assert runs > 0, output
    return runs


def script(name: str, spec: dict[str, Any], **popen: Any) -> subprocess.Popen[str]:
    """Start test/scripts/<name>.rb with ``spec`` as its JSON argument."""
    assert RUBY is not None
    return subprocess.Popen(
        [RUBY, "-Ilib", str(Path("test") / "scripts" / f"{name}.rb"), json.dumps(spec)],
        cwd=RUBY_DIR,
        text=True,
        **popen,
    )
