"""Cost per message of the shipped schemas: this checkout's validator against a git revision's.

Run: .venv/bin/python bench/schema_before_after.py [--rev main] [--rounds 60]
Extracts ``clients/python/busd_protocol`` at ``--rev`` with ``git archive`` into a temporary
directory (renamed ``busd_protocol_before``), loads schemas/ with both packages in one
process, and times them alternately, round after round; each figure is the best round, so
both sides see the same machine load. Prints ns/message and the ratio after/before for
``SchemaSet.check`` (valid and invalid release v2, valid instance-state v1) and for the
generated fast checks alone.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.schema_validation import _spoil, release_v2

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "clients/python/busd_protocol"


def extract(rev: str, into: Path) -> None:
    """``busd_protocol`` at ``rev``, importable as ``busd_protocol_before`` from ``into``."""
    archive = into / "before.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, PACKAGE], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    source = into / PACKAGE
    target = into / "busd_protocol_before"
    source.rename(target)
    for path in target.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\bbusd_protocol\b", "busd_protocol_before", text))


def instance_state(i: int) -> dict[str, Any]:
    return {
        "app": "shop",
        "instance_id": f"web.{i}",
        "state": "up",
        "host": f"h{i % 50}.example.org",
        "version": "v12",
        "reported_at": 1_700_000_000_000_000_000 + i,
    }


def best_round(check: Callable[[Any], Any], messages: list[Any]) -> float:
    start = time.perf_counter_ns()
    for message in messages:
        check(message)
    return (time.perf_counter_ns() - start) / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rev", default="main")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extract(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        before = importlib.import_module("busd_protocol_before.schemas")
        after = importlib.import_module("busd_protocol.schemas")
        sets = {
            tag: mod.SchemaSet.load(ROOT / "schemas")
            for tag, mod in (("before", before), ("after", after))
        }
    valid = [release_v2(i) for i in range(5000)]
    invalid = [_spoil(m) for m in valid]
    states = [instance_state(i) for i in range(5000)]
    rows: dict[tuple[str, str], tuple[Callable[[Any], Any], list[Any]]] = {}
    for tag, schemas in sets.items():
        routes = schemas.routes()
        rows["SchemaSet.check, release v2 valid", tag] = (
            lambda m, s=schemas: s.check("release.a", "release", 2, m),
            valid,
        )
        rows["SchemaSet.check, release v2 invalid", tag] = (
            lambda m, s=schemas: s.check("release.a", "release", 2, m),
            invalid,
        )
        rows["SchemaSet.check, instance-state v1", tag] = (
            lambda m, s=schemas: s.check("instance.a", "instance-state", 1, m),
            states,
        )
        rows["fast check, release v2", tag] = (routes[("release", 2)][1], valid)
        rows["fast check, instance-state v1", tag] = (routes[("instance-state", 1)][1], states)
    best = dict.fromkeys(rows, float("inf"))
    for _ in range(args.rounds):
        for key, (check, messages) in rows.items():
            best[key] = min(best[key], best_round(check, messages))
    print(f"before: {args.rev}; after: this checkout; best of {args.rounds} alternating rounds")
    for name in dict.fromkeys(name for name, _ in rows):
        old, new = best[name, "before"], best[name, "after"]
        print(f"{name:38s} {old:6.0f} -> {new:6.0f} ns/message  after/before {new / old:.2f}")


if __name__ == "__main__":
    main()
