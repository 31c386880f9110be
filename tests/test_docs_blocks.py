"""Docs that run as pasted: every code block of README.md, docs/*.md, deploy/README.md and
schemas/README.md is marked (tests/docblocks.py says how), and every ``run`` block runs.

Each document's blocks run, in order, on a private host (tests/hostns.py): its own loopback
and /etc, /run, so busd listens where the documents say (127.0.0.1:7401-7403; the pool on
10.0.0.1-3) and busdctl finds it with no flag, in a directory laid out as a checkout
(``schemas/``, ``deploy/``) where busd was started with no flag, as ``make run`` does. A
comment line in a shell block that quotes busdctl's output (``# busdctl: ...``) must match a
line it printed, ``…`` standing for anything.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, REPO
from docblocks import DOCUMENTS, Block, blocks
from hostns import IP, PrivateHost, private_host

from busd_client.cli import PROG

ENV = {"PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8"}
POOL = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
RUNNABLE = {"python", "sh", "toml", "json"}


def test_every_code_block_is_marked_run_or_fragment() -> None:
    unmarked = [b.where for path in DOCUMENTS for b in blocks(path) if b.marker is None]
    assert unmarked == [], f"blocks without <!-- run --> or <!-- fragment -->: {unmarked}"
    for path in DOCUMENTS:
        for b in blocks(path):
            if b.marker == "run":
                assert b.lang in RUNNABLE, f"{b.where}: cannot run a {b.lang or 'plain'} block"


class Checkout:
    """The directory the documents' commands run in, and the busd(s) they talk to."""

    def __init__(self, host: PrivateHost, root: Path) -> None:
        self.host = host
        self.work = root / "checkout"
        self.work.mkdir()
        shutil.copytree(REPO / "schemas", self.work / "schemas")
        shutil.copytree(REPO / "deploy", self.work / "deploy")
        self.logs: list[Path] = []

    def start(self, *args: str, name: str = "busd") -> None:
        log_path = self.work / f"{name}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:
            self.host.popen([str(BIN / "busd"), *args], cwd=str(self.work), stdout=log, stderr=log)

    def start_pool(self) -> None:
        for k, address in enumerate(POOL, 1):
            done = self.host.run([IP, "addr", "add", f"{address}/32", "dev", "lo"])
            assert done.returncode == 0, done.stderr
            self.start(
                f"--pub-endpoint=tcp://{address}:7401",
                f"--sub-endpoint=tcp://{address}:7402",
                f"--state-endpoint=tcp://{address}:7404",
                f"--metrics={address}:7403",
                f"--var-dir=bus{k}",
                "--insecure",  # not loopback, no keys: only inside this private host
                name=f"bus{k}",
            )
        for address in POOL:
            self.wait_ready("--metrics", f"{address}:7403")

    def wait_ready(self, *where: str) -> None:
        deadline = time.monotonic() + 30
        while (ping := self.run_cmd([str(BIN / PROG), "ping", *where])).returncode != 0:
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-1500:] for p in self.logs)
                raise AssertionError(f"busd never ready: {ping.stdout}{ping.stderr}\n{logs}")
            time.sleep(0.1)

    def run_cmd(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.host.run(argv, cwd=str(self.work), env=ENV, timeout=timeout)


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Checkout]:
    with private_host(tmp_path / "host") as host:
        yield Checkout(host, tmp_path)


def expected_output(block: Block) -> list[re.Pattern[str]]:
    """Comment lines quoting what busdctl prints, as patterns (``…`` matches anything)."""
    quoted = [line[2:].strip() for line in block.text.splitlines() if line.startswith(f"# {PROG}")]
    return [re.compile(".*".join(map(re.escape, q.split("…")))) for q in quoted]


def run_block(checkout: Checkout, index: int, block: Block) -> str:
    """ "" when the block did what its marker says, else what went wrong."""
    script = checkout.work / f"block{index}.{block.lang}"
    if block.lang == "python":
        script.write_text(block.text)
        done = checkout.run_cmd([str(BIN / "python"), str(script)])
    elif block.lang == "sh":
        if "promtool" in block.text and shutil.which("promtool") is None:
            return ""  # the promtool tests skip the same way; nothing else to check here
        if block.exit_status == 0:
            script.write_text("set -e\n" + block.text + "wait\n")
        else:  # the status of the block's last command, once its background jobs are done
            script.write_text(block.text + 'status=$?\nwait\nexit "$status"\n')
        done = checkout.run_cmd(["bash", str(script)])
    elif block.lang == "toml":
        done = run_toml(checkout, script, block)
    else:
        done = run_json(checkout, script, block)
    problems = []
    if done.returncode != block.exit_status:
        problems.append(f"exited {done.returncode}, not {block.exit_status}")
    printed = (done.stdout + done.stderr).splitlines()
    for pattern in expected_output(block):
        if not any(pattern.fullmatch(line) for line in printed):
            problems.append(f"printed no line like {pattern.pattern!r}")
    if problems:
        return f"{block.where}: {'; '.join(problems)}:\n{done.stdout}{done.stderr}"
    return ""


def run_toml(checkout: Checkout, script: Path, block: Block) -> subprocess.CompletedProcess[str]:
    script.write_text(block.text)
    if "[[broker]]" in block.text:
        check = f"from busd_client.pool_file import load_pool; print(load_pool({str(script)!r}))"
        return checkout.run_cmd([str(BIN / "python"), "-c", check])
    # An assertions file: a busd started with it must come up (a broken one exits 69).
    return checkout.run_cmd(
        [
            str(BIN / "python"),
            "-c",
            ASSERTIONS_START,
            str(BIN / "busd"),
            str(script),
            str(checkout.work / f"{script.stem}-var"),
        ]
    )


ASSERTIONS_START = """
import subprocess, sys, time
busd, path, var = sys.argv[1:]
proc = subprocess.Popen(
    [busd, "--assertions", path, "--var-dir", var, "--metrics", "off", "--log-format", "json",
     f"--pub-endpoint=ipc://{var}-pub", f"--sub-endpoint=ipc://{var}-sub",
     f"--state-endpoint=ipc://{var}-state"],
    stderr=subprocess.PIPE, text=True)
for line in proc.stderr:
    if '"event":"ready"' in line.replace(" ", ""):
        print("busd started with it")
        proc.terminate()
        sys.exit(0 if proc.wait(20) == 0 else 1)
sys.exit(f"busd exited {proc.wait()}")
"""


def run_json(checkout: Checkout, script: Path, block: Block) -> subprocess.CompletedProcess[str]:
    """Parsed; an envelope (schema, version, data) must pass the shipped schemas."""
    script.write_text(block.text)
    check = (
        "import json, sys\n"
        "from busd_protocol.schemas import SchemaSet\n"
        f"value = json.load(open({str(script)!r}))\n"
        "if 'data' in value:\n"
        "    verdict = SchemaSet.load('schemas').check(\n"
        "        value['topic'], value['schema'], value['version'], value['data'])\n"
        "    sys.exit(verdict and f'refused: {verdict}')\n"
    )
    return checkout.run_cmd([str(BIN / "python"), "-c", check])


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "document",
    [d for d in DOCUMENTS if any(b.marker == "run" for b in blocks(d))],
    ids=lambda d: str(d.relative_to(REPO)),
)
def test_every_run_block_of_the_document_runs_as_pasted(document: Path, checkout: Checkout) -> None:
    runs = [b for b in blocks(document) if b.marker == "run"]
    if document.name == "pool.md":
        checkout.start_pool()
    else:
        checkout.start()  # no flags at all, in the checkout: as `make run` starts it
        checkout.wait_ready()
    failures = [problem for i, b in enumerate(runs) if (problem := run_block(checkout, i, b))]
    assert failures == [], "\n\n".join(failures)
