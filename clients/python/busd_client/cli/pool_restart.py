"""busdctl pool restart: restart the brokers of a pool one at a time, each ready before the next.

For each broker in pool file order: run its ``restart`` command with sh (output to stderr,
prefixed with the broker's name), then poll /readyz and /metrics until one scrape shows it
ready with a process start time other than the one before the command (a new process); only
then the next. The first broker that fails stops the run, leaving the rest untouched. Builds
on cli/pool.py (pool file, per-broker errors, exit codes), which registers the command.

Progress is one line per state a broker passes through ("warming up (1.9 s left)" once, not
once per countdown step), then its timings.

Exit status (cli/exits.py): 0 every broker restarted; 1 refused (some broker not ready, no
--force) or aborted at a broker; 2 the pool file is missing or wrong, or lacks restart or
metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from busd_client.cli.common import dump_json, error
from busd_client.cli.exits import EXIT_FAILED
from busd_client.cli.exposition import readyz
from busd_client.cli.pool import (
    EXIT_POOL_FILE,
    BrokerFailed,
    add_pool,
    address_all,
    metrics_summary,
    reason,
    with_pool,
)
from busd_client.cli.stats import Summary
from busd_client.pool_file import PoolEntry

__all__ = ["register_restart", "run_restart"]


def run_restart(args: argparse.Namespace, pool: list[PoolEntry]) -> int:
    unusable = [
        f"{e.name} has no {field}"
        for e in pool
        for field in ("restart", "metrics")
        if getattr(e, field) is None
    ]
    if unusable:  # without both, a restart cannot be done or cannot be seen to have worked
        error(f"pool restart: {'; '.join(unusable)} (needs restart and metrics in the pool file)")
        return EXIT_POOL_FILE
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    states = address_all(pool, lambda e: ready_state(e, min(args.ready_timeout, 5.0)))
    not_ready = [f"{o.name} ({o.error})" for o in states if not o.ok]
    if not_ready and not args.force:
        error(
            "pool restart: refused, not every broker is ready now (restarting another would "
            f"leave the pool with fewer still): {', '.join(not_ready)}; --force to go on"
        )
        return EXIT_FAILED
    if not_ready:
        say(f"pool restart: going on (--force) although not ready: {', '.join(not_ready)}")
    report: list[dict[str, Any]] = [{"name": e.name, "state": "untouched"} for e in pool]
    started = time.monotonic()
    for i, entry in enumerate(pool):
        outcome = restart_one(entry, args, say)
        report[i].update(outcome)
        if outcome["state"] != "restarted":
            untouched = [e.name for e in pool[i + 1 :]]
            error(
                f"pool restart: aborted at {entry.name}: {outcome['error']}; not restarted: "
                f"{', '.join(untouched) or 'none'}"
            )
            break
        if args.pause > 0 and i + 1 < len(pool):
            time.sleep(args.pause)
    ok = all(r["state"] == "restarted" for r in report)
    took = time.monotonic() - started
    if args.json:
        print(dump_json({"ok": ok, "seconds": round(took, 3), "brokers": report}))
    elif ok:
        print(f"pool restart: {len(pool)} broker(s) restarted one at a time in {took:.1f} s")
    return 0 if ok else EXIT_FAILED


def ready_state(entry: PoolEntry, timeout: float) -> Summary:
    """The broker's metrics if its /readyz answers 200 now; BrokerFailed otherwise."""
    assert entry.metrics is not None
    try:
        code, body = readyz(entry.metrics, timeout)
    except OSError as exc:
        raise BrokerFailed(f"down: {entry.metrics} does not answer: {reason(exc)}") from None
    if code != 200:
        raise BrokerFailed(f"/readyz answered {code} {body}")
    return metrics_summary(entry, timeout)


def restart_one(
    entry: PoolEntry, args: argparse.Namespace, say: Callable[[str], None]
) -> dict[str, Any]:
    """Run the broker's restart command, then wait until a new process is ready."""
    assert entry.restart is not None and entry.metrics is not None
    try:  # the process start time tells the new busd from the old one still answering
        # 0.0 where prometheus-client exports no process metrics: then any ready answer counts.
        before: float | None = metrics_summary(entry, min(args.ready_timeout, 5.0)).started
        before = before or None
    except BrokerFailed:
        before = None
    say(f"{entry.name}: restarting: {entry.restart}")
    begin = time.monotonic()
    failure = run_command(entry.restart, args.timeout, entry.name)
    ran = time.monotonic() - begin
    if failure:
        return {
            "state": "failed",
            "error": f"restart command {failure}",
            "restart_seconds": round(ran, 3),
        }
    say(f"{entry.name}: restart command done in {ran:.2f} s; waiting for /readyz")
    deadline, last = time.monotonic() + args.ready_timeout, ""  # last: the state's shape
    while True:
        now = time.monotonic()
        try:
            summary = ready_state(entry, max(0.1, min(2.0, deadline - now)))
            # Both from one scrape: /readyz above may have come from the old process.
            if summary.ready and (before is None or summary.started != before):
                break
            state = "ready, but still the process from before the restart"
        except BrokerFailed as exc:
            state = str(exc)
        if shape(state) != last:
            say(f"{entry.name}: {state}")
            last = shape(state)
        if now >= deadline:
            return {
                "state": "failed",
                "restart_seconds": round(ran, 3),
                "error": f"not ready within {args.ready_timeout:g} s (last: {state})",
            }
        time.sleep(min(0.05, max(0.0, deadline - now)))
    ready = time.monotonic() - begin - ran
    say(f"{entry.name}: ready {ready:.2f} s after its restart command ({ran + ready:.2f} s in all)")
    return {
        "state": "restarted",
        "restart_seconds": round(ran, 3),
        "ready_seconds": round(ready, 3),
    }


def shape(state: str) -> str:
    """A state without its figures: "warming up (1.2 s left)" and "(0.9 s left)" are one."""
    return re.sub(r"\d+(?:\.\d+)?", "#", state)


def run_command(command: str, timeout: float, name: str) -> str:
    """Run ``command`` with sh; "" when it exits 0 in time, else what went wrong. Its output
    goes to stderr, prefixed with the broker's name (stdout may be carrying JSON)."""
    # The pool file's restart field is a shell command by design (ssh, systemctl, sudo ...).
    proc = subprocess.Popen(  # noqa: S602
        command,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # sh and whatever it started (ssh ...)
        try:  # a child that left the process group may still hold the pipe: stop reading
            output, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            output = b""
        problem = f"did not finish within {timeout:g} s (killed)"
    else:
        problem = "" if proc.returncode == 0 else f"exited with status {proc.returncode}"
    for line in output.decode("utf-8", "replace").splitlines():
        print(f"{name}| {line}", file=sys.stderr)
    return problem


def register_restart(actions: Any) -> None:
    """Add ``restart`` to the ``busdctl pool`` subcommands ``actions``."""
    restart = actions.add_parser(
        "restart",
        help="restart every broker, one at a time, each ready before the next",
        description="For each broker in file order: run its restart command (must exit 0), "
        "then wait until its /readyz answers 200 from the new process; only then "
        "the next. Stops at the first broker that fails, leaving the rest "
        "untouched. Refuses to start while any broker is not ready (--force).",
    )
    add_pool(restart, with_timeout=False)
    restart.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="time allowed for each restart command (default %(default)s)",
    )
    restart.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="time allowed for each broker to become ready after its "
        "restart command (default %(default)s)",
    )
    restart.add_argument(
        "--pause",
        type=float,
        default=0.0,
        metavar="S",
        help="wait this long after a broker is ready before the next",
    )
    restart.add_argument(
        "--force", action="store_true", help="restart even though some broker is not ready now"
    )
    restart.set_defaults(func=with_pool(run_restart))
