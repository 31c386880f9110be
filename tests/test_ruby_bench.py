"""`make bench`'s Ruby figure: the Ruby publisher against the Python one, same busd, same
run. No timed assertions: only that both ran, every publish was answered, nothing was lost,
and the report carries the ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import rubyproc
from conftest import REPO

_MISSING = rubyproc.missing()
pytestmark = pytest.mark.skipif(
    _MISSING is not None, reason=f"Ruby client tests skipped: {_MISSING}"
)
MESSAGES = 3000


@pytest.mark.timeout(120)
def test_the_ruby_workload_compares_both_publishers_in_one_run(tmp_path: Path) -> None:
    """`python -m bench --only ruby` runs Busd::Publisher and busd_client.Publisher 1 -> 1
    against one busd and reports their rate and CPU per message, and the ratio."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--systems",
            "busd",
            "--only",
            "ruby",
            "--messages",
            str(MESSAGES),
            "--repeat",
            "1",
            "--no-profile",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = tmp_path.glob("*.json")
    doc = json.loads(record.read_text())
    assert doc["errors"] == [] and doc["skipped"] == {}
    ruby = doc["results"]["ruby"]
    for side in ("python", "ruby"):
        (run,) = ruby[side]["runs"]
        assert run["sent"] == run["received"] == MESSAGES
        assert run["busd"]["every_publish_answered"] and run["busd"]["zero_loss"]
        assert run["publisher_cpu_us_per_msg"] > 0
        assert ruby[side]["median"]["lost"] == 0
    assert ruby["ratio"]["published"] > 0 and ruby["ratio"]["publisher_cpu_us_per_msg"] > 0
    for label in ("busd, busd_client.Publisher", "busd, Ruby Busd::Publisher", "**Ruby ÷ Python**"):
        assert f"| {label} |" in proc.stdout, label
