"""The fenced code blocks of the project's documents, and the marker saying what each is.

Every block is preceded (the line before its opening fence, blank lines aside) by one of:

- ``<!-- run -->``: tests/test_docs_blocks.py executes it against a real busd and it must
  succeed; ``<!-- run: exit N -->``: it must exit N (an example of a refusal);
- ``<!-- fragment -->`` or ``<!-- fragment: why -->``: not executed (a diagram, a syntax
  synopsis, output, a grammar, or commands that need sudo, systemd or other hosts).

How a ``run`` block runs depends on its language: ``python`` with the installed packages,
``sh`` with bash (``set -e``, then ``wait`` for background jobs) and the venv's bin first
on PATH, as after ``. .venv/bin/activate``; ``toml`` is loaded by what reads such a file
(a pool file by ``load_pool``, an assertions file by a busd started with it); ``json`` is
parsed, and an envelope must pass the shipped schemas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DOCUMENTS", "Block", "blocks"]

_REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    _REPO / "README.md",
    *sorted((_REPO / "docs").glob("*.md")),
    _REPO / "deploy" / "README.md",
    _REPO / "schemas" / "README.md",
]
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!-- (run|fragment)(?::\s*(.*?))?\s*-->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None  # "run", "fragment", or None when unmarked
    detail: str  # after the colon: "exit 1", or why it is a fragment

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(_REPO)}:{self.line}"

    @property
    def exit_status(self) -> int:
        match = re.fullmatch(r"exit (\d+)", self.detail)
        return int(match.group(1)) if match else 0


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), len(lines))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(before)
        found.append(
            Block(
                path=path,
                line=i + 1,
                lang=opening.group(1),
                text="\n".join(lines[i + 1 : end]) + "\n",
                marker=marker.group(1) if marker else None,
                detail=(marker.group(2) or "") if marker else "",
            )
        )
        i = end + 1
    return found
