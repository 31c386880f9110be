"""busd refuses to start on a library older than its floor, naming it; the versions it runs
with are in busd_build_info."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import BusdProcess
from opshttp import scrape

from busd.ops.build import refusals


def test_each_library_below_its_floor_is_named_with_what_was_found() -> None:
    found = {"libzmq": "4.3.1", "pyzmq": "27.3.0", "msgpack": "0.6.2"}
    problems = refusals(found)
    assert len(problems) == 2
    assert problems[0].startswith("libzmq 4.3.1 is older than 4.3.5 (CVE-2019-13132")
    assert problems[1].startswith("msgpack 0.6.2 is older than 1.0")
    assert refusals({"libzmq": "4.3.5", "pyzmq": "25.0.0", "msgpack": "1.0.0"}) == []
    assert refusals({"libzmq": "4.3.10", "pyzmq": "26.1", "msgpack": "1.1.0rc1"}) == []


@pytest.mark.timeout(30)
def test_busd_on_a_libzmq_reporting_4_3_1_refuses_to_start_and_says_why(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    # The real busd, with libzmq's version report replaced before busd imports zmq.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import zmq\nzmq.zmq_version = lambda: '4.3.1'\n")
    busd = busd_factory(start=False)
    busd.env = {"PYTHONPATH": str(site)}
    with pytest.raises(AssertionError, match="exited 78"):
        busd.start()
    [failed] = [line for line in busd.logs() if line.get("event") == "startup failed"]
    assert failed["error_type"] == "BadConfig"
    assert "libzmq 4.3.1 is older than 4.3.5" in failed["error"]


def test_build_info_names_the_libzmq_pyzmq_and_msgpack_busd_runs_with(busd: BusdProcess) -> None:
    [labels] = [dict(k[1]) for k in scrape(busd.metrics) if k[0] == "busd_build_info"]
    assert labels["libzmq"] == zmq.zmq_version()
    assert labels["pyzmq"] == zmq.pyzmq_version()
    assert labels["msgpack"] == ".".join(map(str, msgpack.version))
