"""The Ruby client's publisher against the Python one (issue 18): 1 -> 1 flat-out to the
same busd in the same run, interleaved, figures as medians and ratios.

The Ruby side is bench/ruby_worker.rb (Busd::Publisher from clients/ruby), run as a
bench.worker publisher: ``python -m bench.worker`` execs Ruby for the ``busd-ruby`` driver,
so the controller and the subscriber are the ones every other system uses. Publisher CPU is
the process's (all threads, libzmq's I/O thread included) from the first measured send to
the last reply, as for the Python publisher.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

from bench import metrics, systems
from bench.runner import TrialError, run_trial
from bench.servers import Unavailable
from bench.session import Session

REPO = Path(__file__).resolve().parents[1]
RUBY_LIB = REPO / "clients" / "ruby" / "lib"
WORKER = REPO / "bench" / "ruby_worker.rb"
PYTHON = systems.SYSTEMS["busd"]
RUBY = systems.System("busd-ruby", "busd, Ruby Busd::Publisher", "busd-ruby", "zmq-sub", "busd")
KEYS = ("published", "delivered", "lost", "publisher_cpu_us_per_msg", "server_cpu_us_per_msg")


def ruby_missing() -> str | None:
    """Why the Ruby publisher cannot run here, or None."""
    ruby = shutil.which("ruby")
    if ruby is None:
        return "ruby is not installed (Debian: apt-get install ruby ruby-ffi-rzmq ruby-msgpack)"
    probe = subprocess.run(
        [ruby, "-I", str(RUBY_LIB), "-e", 'require "busd"'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode:
        return f"the Ruby client does not load: {probe.stderr.strip()[:200]}"
    return None


def exec_worker(spec_json: str) -> NoReturn:
    """Become the Ruby worker (same pid, same stdin/stdout pipes to the controller)."""
    ruby = shutil.which("ruby") or "ruby"
    os.execv(ruby, [ruby, "-I", str(RUBY_LIB), str(WORKER), spec_json])  # noqa: S606 - fixed argv, no shell


def _trial(session: Session, system: systems.System) -> dict[str, Any] | None:
    s = session.settings
    try:
        server = session.pool.get("busd")
        assert server is not None
        pubs, subs = systems.specs(system, server, 1, 1, **s.load())
        cpu0 = metrics.cpu_seconds(server.pid)
        trial = run_trial(pubs, subs, expected_s=s.duration)
        cpu1 = metrics.cpu_seconds(server.pid)
    except (TrialError, Unavailable, OSError) as exc:
        session.error("ruby", system.name, exc)
        return None
    used = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return metrics.delivery(trial, used)


def ruby(session: Session) -> None:
    """Python busd_client.Publisher, then Ruby Busd::Publisher, ``repeat`` times each."""
    out: dict[str, Any] = {"python": {"runs": []}, "ruby": {"runs": []}}
    why = ruby_missing()
    if why is not None:
        session.skipped["busd-ruby"] = why
        session.progress.say(f"skipping the Ruby publisher: {why}")
        return
    session.results["ruby"] = out
    for rep in range(session.settings.repeat):
        for key, system in (("python", PYTHON), ("ruby", RUBY)):
            figures = _trial(session, system)
            if figures is None:
                session.progress.step(f"Ruby vs Python publisher · {key} · run {rep + 1}: failed")
                continue
            out[key]["runs"].append(figures)
            cpu = figures.get("publisher_cpu_us_per_msg")
            session.progress.step(
                f"Ruby vs Python publisher · {key} · run {rep + 1}: "
                f"{figures['published'] / 1000:.1f}k msg/s published, "
                f"{'?' if cpu is None else f'{cpu:.1f}'} µs CPU/msg, lost {figures['lost']}"
            )
    for per in out.values():
        per["median"] = {k: metrics.median_of(per["runs"], k) for k in KEYS}
        busd = [r["busd"] for r in per["runs"] if "busd" in r]
        per["median"]["every_publish_answered"] = bool(busd) and all(
            b["every_publish_answered"] for b in busd
        )
    py, rb = out["python"]["median"], out["ruby"]["median"]
    out["ratio"] = {
        k: rb[k] / py[k] if rb.get(k) and py.get(k) else None
        for k in ("published", "publisher_cpu_us_per_msg")
    }


def lines(session: Session) -> list[str]:
    """The report's section: rate and CPU per message, Ruby against Python."""
    out = session.results.get("ruby")
    if not out or "ratio" not in out:
        return []
    rows = []
    for key, label in (("python", PYTHON.label), ("ruby", RUBY.label)):
        m = out[key]["median"]
        rate, cpu = m.get("published"), m.get("publisher_cpu_us_per_msg")
        rows.append(
            f"| {label} | {'—' if rate is None else f'{rate / 1000:.1f}k'} | "
            f"{'—' if cpu is None else f'{cpu:.1f}'} | "
            f"{'yes' if m['every_publish_answered'] else 'NO'} | {m.get('lost')} |"
        )
    ratio = out["ratio"]
    rate_r, cpu_r = ratio.get("published"), ratio.get("publisher_cpu_us_per_msg")
    rows.append(
        f"| **Ruby ÷ Python** | {'—' if rate_r is None else f'{rate_r:.2f}×'} | "
        f"{'—' if cpu_r is None else f'{cpu_r:.2f}×'} | | |"
    )
    return [
        "| 1→1 flat-out, publisher library | msg/s published | publisher CPU µs/msg "
        "| every publish answered | lost |",
        "|---|---|---|---|---|",
        *rows,
    ]
