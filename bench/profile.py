"""A py-spy profile of busd under the 1 -> 1 flat-out load, reduced to the hot functions.

py-spy samples the running busd from outside (``record --pid``, raw collapsed stacks), so
busd runs unmodified; the profiled trial is extra and not part of any figure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import metrics, systems
from bench.runner import TrialError, run_trial
from bench.servers import Unavailable
from bench.session import Session

RATE = 250  # samples per second
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_NUMBER = re.compile(r":\d+\)$")  # "f (file.py:123)" -> "f (file.py)"
# With --native py-spy cannot tell a thread blocked in C from a busy one: stacks through
# these are waits (a worker thread on its queue, the loop in epoll), not work.
IDLE_MARKERS = (
    "PyThread_acquire_lock_timed",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "epoll_wait",
    "uv__io_poll",
)


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


def per_message(
    before: dict[str, float], after: dict[str, float], delivered: int
) -> dict[str, float]:
    """CPU µs per delivered message of each busd thread over the profiled trial (includes
    the ~0.3 s before the load starts, when busd is idle)."""
    if not delivered:
        return {}
    return {
        name: round((after[name] - before.get(name, 0.0)) * 1e6 / delivered, 2)
        for name in sorted(after)
        if after[name] - before.get(name, 0.0) > 0
    }


def first_error(stderr: str) -> str:
    """py-spy's own message, without the Rust backtrace that follows it."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Stack backtrace"):
            lines = lines[:i]
            break
    return " ".join(lines)[-400:] or "(no message)"


def hot_functions(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of samples per function from collapsed stacks, and self
    shares per source line (where in a function the time goes; C calls made from a
    line, such as pyzmq's send/recv, count as that line's own time)."""
    own: Counter[str] = Counter()
    own_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            continue
        count = int(m["count"])
        frames = [f.strip() for f in m["stack"].split(";") if f.strip()]
        if not frames:
            continue
        if any(marker in frame for frame in frames for marker in IDLE_MARKERS):
            idle += count
            continue
        total += count
        own_lines[frames[-1]] += count
        functions = [_NUMBER.sub(")", f) for f in frames]
        own[functions[-1]] += count
        for frame in set(functions):
            inclusive[frame] += count
    if not total:
        return {"samples": 0, "idle_samples": idle, "self": [], "self_lines": [], "inclusive": []}

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100.0 * n / total, 1)] for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "idle_samples": idle,
        "self": share(own),
        "self_lines": share(own_lines),
        "inclusive": share(inclusive),
    }


def profile(session: Session, out_dir: Path, stamp: str) -> None:
    """Profile the shared busd under busd-raw 1 -> 1 flat-out; results in the session."""
    exe = py_spy()
    s = session.settings
    if exe is None:
        why = "py-spy is not installed (bash bench/install.sh installs bench/requirements.txt)"
        session.error("profile", "busd", RuntimeError(why))
        session.results["profile"] = {"skipped": why}
        return
    try:
        server = session.pool.get("busd")
    except Unavailable as exc:
        session.results["profile"] = {"skipped": str(exc)}
        return
    assert server is not None
    # py-spy opens --output itself: the directory must exist before it starts (a fresh
    # checkout has no bench/results/ until the first JSON record is written).
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{stamp}-busd-profile.txt"
    duration = max(1, round(s.profile_duration))
    spy: list[subprocess.Popen[bytes]] = []
    # --native must stop the process to unwind C stacks; without it, sampling is nonblocking.
    mode = ["--native"] if s.profile_native else ["--nonblocking"]

    threads_before: list[dict[str, float]] = []

    def start() -> None:
        threads_before.append(metrics.thread_cpu(server.pid))
        spy.append(
            subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(duration),
                    "--rate",
                    str(RATE),
                    "--format",
                    "raw",
                    *mode,
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        time.sleep(0.3)  # py-spy attaches before the load starts

    pubs, subs = systems.specs(systems.SYSTEMS["busd-raw"], server, 1, 1, duration=duration + 0.5)
    try:
        trial = run_trial(pubs, subs, on_go=start, expected_s=duration + 1)
        threads_after = metrics.thread_cpu(server.pid)
        _, err = spy[0].communicate(timeout=duration + 30)
    except (TrialError, OSError, subprocess.TimeoutExpired, IndexError) as exc:
        session.error("profile", "busd", exc)
        for p in spy:
            p.kill()
        return
    if spy[0].returncode != 0 or not raw.exists():
        why = f"py-spy exited {spy[0].returncode}: {first_error(err.decode(errors='replace'))}"
        session.error("profile", "busd", RuntimeError(why))
        session.results["profile"] = {"skipped": why}
        return
    result = hot_functions(raw.read_text())
    result["file"] = str(raw)
    result["native"] = s.profile_native
    delivered = sum(sub["received"] for sub in trial.subscribers)
    result["delivered"] = delivered
    result["thread_cpu_us_per_msg"] = per_message(threads_before[0], threads_after, delivered)
    session.results["profile"] = result
    session.progress.step(f"profile · busd under 1→1 flat-out: {result['samples']} samples")
