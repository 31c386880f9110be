"""busdctl as a whole: --version, one exit-status table and one discovery order in --help (the
same as docs/operations.md), usage errors exit 2 (as JSON under --json), and a bash
completion generated from the parser that real bash completes with."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from busd_client.cli.exits import TABLE

BUSDCTL = str(Path(sys.executable).parent / "busdctl")


def busdctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUSDCTL, *args], capture_output=True, text=True, timeout=20, check=False)


def test_version_names_the_tool_the_client_and_the_protocol() -> None:
    result = busdctl("--version")
    assert (result.returncode, result.stdout) == (
        0,
        "busdctl 0.1.0 (busd-client 0.1.0, protocol 1)\n",
    )


def test_help_shows_the_discovery_order_and_the_exit_table_the_docs_show() -> None:
    text = busdctl("--help").stdout
    assert "finding busd (first found wins, for each address):" in text
    assert "/etc/busd/busd.toml" in text and "/run/busd/control.sock" in text
    doc = (REPO / "docs" / "operations.md").read_text()
    for code, name, _ in TABLE:
        assert re.search(rf"^  {code}  {name} ", text, re.MULTILINE), name
        assert f"| {code} | {name} |" in doc, f"docs/operations.md lacks exit {code} {name}"


@pytest.mark.parametrize(
    "argv",
    [
        ("rate", "set", "publish"),
        ("rates", "--bogus"),
        ("nonsense",),
        ("status", "--timeout", "soon"),
        ("pool", "rates", "--timeout", "x"),
        ("sub", "--count", "0"),
    ],
)
def test_usage_errors_exit_2_and_are_json_under_json(argv: tuple[str, ...]) -> None:
    plain = busdctl(*argv)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.startswith(("usage: busdctl", "busdctl: "))
    answer = busdctl(*argv, "--json")
    assert answer.returncode == 2
    error = json.loads(answer.stdout)
    assert error["ok"] is False and error["error"]["code"] == "usage"


@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completes_commands_options_choices_and_files_from_the_generated_script(
    tmp_path: Path,
) -> None:
    script = busdctl("completion", "bash")
    assert script.returncode == 0
    (tmp_path / "pool.toml").write_text("")
    probe = f"""
source /dev/stdin <<'COMPLETION'
{script.stdout}
COMPLETION
complete -p busdctl
t() {{
  COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _busdctl; echo "${{COMPREPLY[*]}}"
}}
t busdctl ''
t busdctl ra
t busdctl rate ''
t busdctl rate set --b
t busdctl pool rates --pool {tmp_path}/po
t busdctl completion ''
t busdctl pub t --schema s --version 2 --pub-endpoint x --j
"""
    done = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "complete -F _busdctl busdctl"
    assert set(lines[1].split()) == {
        "status", "ping", "pub", "sub", "state", "rates", "rate", "schemas", "stats", "top",
        "pool", "keys", "acl", "completion",
    }  # fmt: skip
    assert lines[2:] == [
        "rates rate",
        "set clear",
        "--burst",
        f"{tmp_path}/pool.toml",
        "bash",
        "--json",
    ]


def test_the_old_name_is_a_deprecated_alias_inside_the_venv_only() -> None:
    """busctl is systemd's D-Bus tool: busd's is busdctl. The old entry point still works,
    with one line on stderr saying so."""
    old = Path(sys.executable).parent / "busctl"
    result = subprocess.run(
        [str(old), "--version"], capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0
    assert result.stdout == "busdctl 0.1.0 (busd-client 0.1.0, protocol 1)\n"
    assert result.stderr == (
        "busctl: deprecated name, use busdctl (busctl is systemd's D-Bus tool); "
        "this alias will go\n"
    )
    assert busdctl("--version").stderr == ""
    for doc in ("README.md", "docs/operations.md", "deploy/README.md"):
        text = (REPO / doc).read_text()
        assert "/usr/local/bin/busctl" not in text and "ln -sf /opt/busd/bin/busctl" not in text
