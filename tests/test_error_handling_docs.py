"""Every long-running loop in busd says, under "Error handling:" in its docstring, what it
retries and what it lets crash (docs/architecture.md, tasks)."""

from __future__ import annotations

import ast
from pathlib import Path

import busd

ROOT = Path(busd.__file__).parent

# Task entry points that wait without a loop of their own (they serve, or delegate).
ENTRY_POINTS = {
    ("app.py", "App.serve"),
    ("app.py", "App._main_loop"),
    ("control/server.py", "ControlServer.run"),
    ("control/__init__.py", "RateControl.run"),
    ("control/schemas_dir.py", "SchemaControl.request_reload"),
    ("ops/http.py", "MetricsServer.run"),
    ("supervision/supervisor.py", "Supervisor.run"),
}


def loops() -> dict[tuple[str, str], str]:
    """(module, qualified name) -> docstring, for every coroutine function that loops, and
    every entry point above."""
    found: dict[tuple[str, str], str] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        for owner in [tree, *[n for n in tree.body if isinstance(n, ast.ClassDef)]]:
            prefix = f"{owner.name}." if isinstance(owner, ast.ClassDef) else ""
            for node in owner.body:
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                name = prefix + node.name
                loops_inside = isinstance(node, ast.AsyncFunctionDef) and any(
                    isinstance(inner, ast.While) for inner in ast.walk(node)
                )
                if loops_inside or (module, name) in ENTRY_POINTS:
                    found[module, name] = ast.get_docstring(node) or ""
    return found


def test_every_long_running_loop_documents_its_error_handling() -> None:
    found = loops()
    assert set(ENTRY_POINTS) <= set(found), set(ENTRY_POINTS) - set(found)
    assert len(found) >= 15  # the broker, monitors, control, rates, schemas, ops, supervisor
    missing = sorted(f"{m}:{n}" for (m, n), doc in found.items() if "Error handling:" not in doc)
    assert not missing, f"no 'Error handling:' paragraph: {missing}"
