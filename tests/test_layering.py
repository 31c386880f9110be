"""The pure layers stay pure at run time: importing them loads no zmq, asyncio or threading.

The import contracts in ``make lint`` check the import graph; this checks what a fresh
interpreter actually loads, which also catches an import hidden behind a package's
``__init__`` or done inside a function at import time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

FORBIDDEN = ("zmq", "asyncio", "threading", "uvloop", "prometheus_client")

PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden})))
"""


@pytest.mark.parametrize("package", ["busd_protocol", "busd.kernel"])
def test_importing_a_pure_package_loads_no_io_machinery(package: str, tmp_path: Path) -> None:
    probe = PROBE.replace("{forbidden}", repr(set(FORBIDDEN)))
    out = subprocess.run(
        [sys.executable, "-c", probe, package],
        capture_output=True,
        text=True,
        check=True,
        timeout=50,
        cwd=tmp_path,  # the installed packages, not the checkout
    )
    assert json.loads(out.stdout) == []


def test_the_probe_sees_what_an_impure_package_loads(tmp_path: Path) -> None:
    """The check above can fail: the client package does load zmq and asyncio."""
    probe = PROBE.replace("{forbidden}", repr(set(FORBIDDEN)))
    out = subprocess.run(
        [sys.executable, "-c", probe, "busd_client"],
        capture_output=True,
        text=True,
        check=True,
        timeout=50,
        cwd=tmp_path,  # the installed packages, not the checkout
    )
    assert {"zmq", "asyncio"} <= set(json.loads(out.stdout))
