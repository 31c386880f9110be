"""The shipped configuration example and deploy documentation stay complete."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from dataclasses import fields

from conftest import BIN, REPO

from busd.config import Config
from busd.kernel.figures import FIGURES

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


def test_busd_accepts_the_example_and_uses_its_values() -> None:
    result = subprocess.run([str(BIN / "busd"), "--config", str(EXAMPLE), "--check-config"],
                            capture_output=True, text=True, timeout=20, check=False, env={})
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    for key, value in tomllib.loads(EXAMPLE.read_text()).items():
        assert effective[key] == value, key


def test_operations_doc_lists_every_figure_and_every_busd_metric_family() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    for figure in FIGURES:
        assert f"`{figure}`" in doc, figure
    metrics_py = (REPO / "busd" / "ops" / "metrics.py").read_text() + (
        REPO / "busd" / "ops" / "metric_sections.py").read_text()
    for name in set(re.findall(r'"(busd_[a-z_]+)"', metrics_py)):
        shown = name if name != "busd_build" else "busd_build_info"
        assert f"`{shown}" in doc, name
