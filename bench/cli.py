"""``python -m bench``: run the workloads, print the table, write the JSON record."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import (
    batches,
    busd_only,
    cores,
    pool_clients,
    profile,
    report,
    ruby_publisher,
    state,
    systems,
    workloads,
)
from bench.session import Progress, Session, Settings

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS: dict[str, Callable[[Session], None]] = {
    "flat": workloads.flat,
    "flat1k": workloads.flat1k,
    "batch": batches.batch,
    "paced": workloads.paced,
    "fanout": workloads.fanout,
    "fanin": workloads.fanin,
    "latency": workloads.latency,
    "topics": workloads.topics,
    "checks": busd_only.checks,
    "memory": busd_only.memory,
    "pool": pool_clients.pool,
    "cores": cores.cores,
    "ruby": ruby_publisher.ruby,
    "state": state.workload,
}
# Need busd: "checks", "memory", "pool", "cores" and "state" start their own instances, "ruby" the
# shared one ("batch" runs only on busd systems but is not busd-only: it needs none of its own).
BUSD_ONLY = ("checks", "memory", "pool", "cores", "ruby", "state")


def _names(value: str, known: Sequence[str], what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    for n in names:
        if n not in known:
            raise argparse.ArgumentTypeError(f"unknown {what} {n!r}; known: {', '.join(known)}")
    return names


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes >= 1 like 1,10,100, got {value!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the same workloads against busd and its peers (pyzmq PUB/SUB, "
        "zmq.proxy, NATS, Redis) on loopback; print a table, write a JSON file.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="short runs, one repeat, fewer topics and stalled messages (~1-2 min)",
    )
    p.add_argument(
        "--only",
        type=lambda v: _names(v, list(WORKLOADS), "workload"),
        default=list(WORKLOADS),
        metavar="W[,W]",
        help=f"workloads to run: {', '.join(WORKLOADS)} (default: all)",
    )
    p.add_argument(
        "--systems",
        type=lambda v: _names(v, list(systems.SYSTEMS), "system"),
        default=list(systems.SYSTEMS),
        metavar="S[,S]",
        help=f"systems: {', '.join(systems.SYSTEMS)} (default: all)",
    )
    p.add_argument(
        "--repeat", type=int, help="runs per figure, median reported (default 3; 1 with --quick)"
    )
    p.add_argument("--duration", type=float, help="seconds per flat-out run")
    p.add_argument(
        "--messages",
        type=int,
        help="send exactly this many messages per publisher instead of timed runs",
    )
    p.add_argument("--topics", type=int, help="distinct topics (default 100,000)")
    p.add_argument(
        "--stall-count",
        type=int,
        help="messages sent past the stalled subscriber (default 1,000,000)",
    )
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy profile of busd under 1→1 flat-out (default: on, off with --quick)",
    )
    p.add_argument(
        "--profile-duration",
        type=float,
        metavar="SECONDS",
        help="how long py-spy samples busd under load (default 3; whole seconds, at least 1)",
    )
    p.add_argument(
        "--profile-native",
        action="store_true",
        default=None,
        help="profile with py-spy --native: C frames (pyzmq, libzmq, msgpack, "
        "syscalls) shown on their own instead of in the calling line",
    )
    p.add_argument(
        "--busd-flag",
        dest="busd_flags",
        action="append",
        metavar="FLAG",
        help="one more command-line flag for every busd started (repeatable), e.g. "
        "--busd-flag=--loop=asyncio",
    )
    p.add_argument(
        "--probe-timeout",
        type=float,
        help="seconds to prove a busd's checks on, its warm-up included (default 10); a busd "
        "whose checks cannot be proven is not measured and the run exits 1",
    )
    p.add_argument(
        "--batch-sizes",
        type=_sizes,
        metavar="N[,N]",
        help="the batch sweep's publisher max_batch values, ratios to the first (default 1,10,100)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON file")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings.quick() if args.quick else Settings()
    for name in (
        "repeat",
        "duration",
        "messages",
        "topics",
        "stall_count",
        "profile",
        "profile_duration",
        "profile_native",
        "probe_timeout",
        "batch_sizes",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(s, name, value)
    if args.busd_flags:
        s.busd_flags = tuple(args.busd_flags)
    return s


def machine() -> dict[str, Any]:
    import zmq

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?"
            )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "kernel": platform.release(),
        "loadavg": list(os.getloadavg()),  # other work on the shared machine, at the start
    }


def planned_steps(s: Settings, only: list[str], names: list[str]) -> int:
    n_systems = len(names)
    per = {
        "flat": s.repeat * n_systems,
        "flat1k": s.repeat * n_systems,
        "batch": batches.steps(s.repeat, s.batch_sizes, names),
        "paced": s.repeat * n_systems * s.paced_steps,
        "fanout": s.repeat * n_systems,
        "fanin": s.repeat * n_systems,
        "latency": s.repeat * n_systems,
        "topics": s.repeat * n_systems,
        "checks": 5 * s.repeat,
        "memory": 2,
        "pool": pool_clients.STEPS_PER_REPEAT * s.repeat,
        "cores": cores.STEPS_PER_REPEAT * s.repeat,
        "ruby": 2 * s.repeat,
        "state": 3,
    }
    return sum(per[w] for w in only) + (1 if s.profile else 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    only = [w for w in WORKLOADS if w in args.only]  # always in the canonical order
    if not set(args.systems) & set(systems.BUSD_SYSTEMS):  # busd-only workloads need busd
        only = [w for w in only if w not in BUSD_ONLY]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    progress = Progress(planned_steps(settings, only, list(args.systems)))
    session = Session(settings, list(args.systems), progress)
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
    }
    out = args.out / f"{stamp}.json"
    try:
        if set(only) - set(BUSD_ONLY):
            session.available()  # start every server now: skips are said up front
        for name in only:
            WORKLOADS[name](session)
        if settings.profile and set(args.systems) & set(systems.BUSD_SYSTEMS):
            profile.profile(session, args.out, stamp)
        meta["servers"] = {k: s.notes for k, s in session.pool.running.items()}
        text = report.render(session, meta)
        report.write_json(out, session, meta)
    except KeyboardInterrupt:
        progress.say("interrupted")
        return 130
    finally:
        session.pool.close()
        progress.close()
    sys.stdout.write(text)
    sys.stdout.write(f"\nJSON: {out}\n")
    return 1 if session.errors else 0
