"""The shipped configuration example and deploy documentation stay complete."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import BIN, REPO, BusdProcess, wait_for
from opshttp import scrape_text

from busd.config import Config
from busd.ops.figures import FIGURES

EXAMPLE = REPO / "deploy" / "busd.toml.example"


def comment_blocks() -> dict[str, str]:
    """key -> the comment lines right above it."""
    blocks: dict[str, str] = {}
    comments: list[str] = []
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("#"):
            comments.append(line)
        elif match := re.match(r"(\w+) = ", line):
            blocks[match.group(1)] = "\n".join(comments)
            comments = []
        else:
            comments = []
    return blocks


def test_the_example_lists_every_setting_with_its_default_and_unit() -> None:
    blocks = comment_blocks()
    assert set(blocks) == {f.name for f in fields(Config)}
    for f in fields(Config):
        assert f"default {json.dumps(f.default)}" in blocks[f.name], f.name
        if f.metadata.get("unit"):
            assert f"({f.metadata['unit']})" in blocks[f.name], f.name


def test_busd_accepts_the_example_and_uses_its_values(tmp_path: Path) -> None:
    """--check-config loads what the paths name, so they point at an installed layout under
    ``tmp_path`` (as the unit's Environment= lines do); every other value is the file's."""
    installed = {
        "schemas_dir": str(REPO / "schemas"),
        "assertions": str(REPO / "deploy" / "assertions.toml"),
        "var_dir": str(tmp_path / "var"),
        "rates_dir": str(tmp_path / "var" / "rates"),
        "control": str(tmp_path / "run" / "control.sock"),
    }
    result = subprocess.run(
        [str(BIN / "busd"), "--config", str(EXAMPLE), "--check-config"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env={f"BUSD_{key.upper()}": value for key, value in installed.items()},
    )
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    for key, value in tomllib.loads(EXAMPLE.read_text()).items():
        assert effective[key] == installed.get(key, value), key


def test_operations_doc_lists_every_figure() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    for figure in FIGURES:
        assert f"`{figure}`" in doc, figure


@pytest.mark.timeout(30)
def test_operations_doc_lists_every_metric_family_of_a_real_scrape(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """All sections on: rate keys, schemas, control, assertions."""
    assertions = tmp_path / "a.toml"
    assertions.write_text('[assertions.x]\nexpr = "received >= 0"\n')
    busd = busd_factory(start=False, extra_args=("--assertions", str(assertions)))
    (busd.rates_dir / "publish.x").write_text("5\n")
    busd.start()
    wait_for(lambda: "busd_assertion_ok{" in scrape_text(busd.metrics), what="assertion export")
    families = re.findall(r"^# TYPE (busd_\w+) ", scrape_text(busd.metrics), re.MULTILINE)
    assert len(families) > 40
    doc = (REPO / "docs" / "operations.md").read_text()
    missing = [name for name in families if f"`{name}`" not in doc]
    assert not missing, f"not in docs/operations.md: {missing}"
