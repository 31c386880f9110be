"""``python -m bench.client_cost``: what one message costs busd_client's publishers, this
tree against a baseline commit, measured in the same run (docs/performance.md, "Publisher
cost").

One busd (started like every bench busd: bench.servers.start_busd, the generous ``publish``
rate, default warm-up). Per repeat and per publisher kind (``Publisher``,
``AsyncPublisher``, ``PoolPublisher`` and ``AsyncPoolPublisher`` to that one broker), one
worker process runs the baseline's client and one this tree's, the order alternating
between repeats so a slow stretch of the shared machine hits both sides alike. A worker
imports ``busd_client`` and ``busd_protocol`` from its own tree (``PYTHONPATH``), waits
until busd accepts its messages, then publishes ``--messages`` messages flat out (window
1,000, release v2, bench.message's payload) in ``SEGMENTS`` equal runs, and flushes. It
reports, per message, the process's CPU (``time.process_time``: every thread, libzmq's I/O
thread included), its main thread's (``time.thread_time``: the Python code alone), and
its main thread's in its best segment (the least disturbed by other work on a shared
machine, so the steadiest figure). Per kind: the medians of each side and the median of
the paired ratios (this tree ÷ baseline, each pair from one repeat).

    python -m bench.client_cost --baseline main --repeat 5 --messages 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import message, servers

KINDS = ("publisher", "async", "pool", "async_pool", "many", "linger", "async_linger")
# Kinds that need a busd_client with batches (the baseline may predate them): skipped there.
BATCH_KINDS = ("many", "linger", "async_linger")
MANY = 100  # messages per publish_many call (kind "many")
LINGER = 0.002  # seconds (kinds "linger", "async_linger"): batches fill flat out
NATS = "nats"  # nats-py to nats-server, the same message encoded per message: same run
SEGMENTS = 20
FIGURES = {
    "cpu_us": "process CPU µs/msg",
    "thread_us": "main thread µs/msg",
    "best_us": "main thread µs/msg, best segment",
}
WINDOW = 1000
WORKER_TIMEOUT = 300.0  # seconds one worker may take, warm-up included
READY_DEADLINE = 20.0  # seconds busd may take to accept a first message (its warm-up)


# -- the worker: one publisher, in its own process --------------------------------------------


def _make(kind: str, endpoint: str) -> Any:
    import busd_client as bc

    kw: dict[str, Any] = {"name": message.PUBLISHER, "window": WINDOW, "timeout": 60.0}
    if kind in ("publisher", "many"):
        return bc.Publisher(endpoint, **kw)
    if kind == "linger":
        return bc.Publisher(endpoint, linger=LINGER, **kw)
    if kind == "async_linger":
        return bc.AsyncPublisher(endpoint, linger=LINGER, **kw)
    if kind == "async":
        return bc.AsyncPublisher(endpoint, **kw)
    if kind == "pool":
        return bc.PoolPublisher([endpoint], **kw)
    return bc.AsyncPoolPublisher([endpoint], **kw)


class _Clock:
    """CPU and wall time from construction, and the main thread's time per segment."""

    def __init__(self, n: int) -> None:
        self.per_segment = max(1, n // SEGMENTS)
        self.segments: list[float] = []
        self.cpu0, self.thread0 = time.process_time(), time.thread_time()
        self.t0 = time.perf_counter()
        self._mark = self.thread0

    def segment(self) -> None:
        now = time.thread_time()
        self.segments.append((now - self._mark) / self.per_segment * 1e6)
        self._mark = now

    def result(self, failures: list[Any]) -> dict[str, Any]:
        n = self.per_segment * SEGMENTS
        return {
            "messages": n,
            "failed": len(failures),
            "cpu_us": (time.process_time() - self.cpu0) / n * 1e6,
            "thread_us": (time.thread_time() - self.thread0) / n * 1e6,
            "best_us": min(self.segments),
            "seconds": time.perf_counter() - self.t0,
        }


def _run_sync(kind: str, endpoint: str, n: int) -> dict[str, Any]:
    pub = _make(kind, endpoint)
    topic, schema, version, data = message.TOPIC, message.SCHEMA, message.VERSION, message.DATA
    deadline = time.monotonic() + READY_DEADLINE
    while True:
        try:
            pub.publish_wait(topic, schema, version, data)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    publish = pub.publish
    clock = _Clock(n)
    if kind == "many":
        chunk = [(topic, schema, version, data)] * MANY
        publish_many = pub.publish_many
        for _ in range(SEGMENTS):
            for _ in range(clock.per_segment // MANY):
                publish_many(chunk)
            publish_many(chunk[: clock.per_segment % MANY])
            clock.segment()
    else:
        for _ in range(SEGMENTS):
            for _ in range(clock.per_segment):
                publish(topic, schema, version, data)
            clock.segment()
    out = clock.result(pub.flush(60.0))
    pub.close()
    return out


async def _run_nats(url: str, n: int) -> dict[str, Any]:
    """nats-py as bench/drivers_nats.py drives it: ``publish`` per message, each a freshly
    encoded envelope (new id and ts), ``flush`` at the end."""
    import nats

    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
    env = message.Envelopes()
    topic = message.TOPIC
    await nc.publish(topic, env.encode(topic))
    await nc.flush()
    publish, encode = nc.publish, env.encode
    clock = _Clock(n)
    for _ in range(SEGMENTS):
        for _ in range(clock.per_segment):
            await publish(topic, encode(topic))
        clock.segment()
    await nc.flush(timeout=60)
    out = clock.result([])
    await nc.close()
    return out


async def _run_async(kind: str, endpoint: str, n: int) -> dict[str, Any]:
    pub = _make(kind, endpoint)
    topic, schema, version, data = message.TOPIC, message.SCHEMA, message.VERSION, message.DATA
    deadline = time.monotonic() + READY_DEADLINE
    while True:
        try:
            await pub.publish_wait(topic, schema, version, data)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    publish = pub.publish
    clock = _Clock(n)
    for _ in range(SEGMENTS):
        for _ in range(clock.per_segment):
            await publish(topic, schema, version, data)
        clock.segment()
    out = clock.result(await pub.flush(60.0))
    await pub.close()
    return out


def worker(kind: str, endpoint: str, n: int) -> None:
    if kind == NATS:
        out = asyncio.run(_run_nats(endpoint, n))
        out["client"] = "nats-py"
        sys.stdout.write(json.dumps(out) + "\n")
        return
    if kind in ("async", "async_pool", "async_linger"):
        out = asyncio.run(_run_async(kind, endpoint, n))
    else:
        out = _run_sync(kind, endpoint, n)
    import busd_client

    out["client"] = str(Path(busd_client.__file__).parent)
    sys.stdout.write(json.dumps(out) + "\n")


# -- the controller ------------------------------------------------------------------------


def extract(ref: str, into: Path) -> Path:
    """The client sources (``clients/python``) of commit ``ref``, under ``into``."""
    archive = into / "baseline.tar"
    with archive.open("wb") as fh:
        subprocess.run(
            ["git", "-C", str(servers.REPO), "archive", ref, "clients/python"],
            stdout=fh,
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "clients" / "python"


def run_worker(tree: Path, kind: str, endpoint: str, n: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(servers.REPO)]))
    out = subprocess.run(
        [sys.executable, "-m", "bench.client_cost", "--worker", kind, endpoint, str(n)],
        capture_output=True,
        text=True,
        env=env,
        cwd=servers.REPO,
        timeout=WORKER_TIMEOUT,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {kind} ({tree}) failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if kind != NATS and not result["client"].startswith(str(tree)):
        raise RuntimeError(f"worker imported {result['client']}, not the client of {tree}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.client_cost", description=__doc__)
    p.add_argument("--baseline", default="main", help="git commit of the baseline client")
    p.add_argument("--repeat", type=int, default=5, help="runs per side and kind (median)")
    p.add_argument("--messages", type=int, default=50_000, help="messages per run")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    p.add_argument(
        "--no-nats",
        action="store_true",
        help="skip nats-py's figure (else measured in the same run when nats-server and "
        "nats-py are installed: bash bench/install.sh)",
    )
    p.add_argument("--worker", nargs=3, metavar=("KIND", "ENDPOINT", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return 0
    kinds = [k for k in args.kinds.split(",") if k]
    head = subprocess.run(
        ["git", "-C", str(servers.REPO), "rev-parse", "--short", args.baseline],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        k: {"baseline": [], "tree": []} for k in kinds
    }
    nats_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-client-cost-") as tmp:
        sides = {
            "baseline": extract(args.baseline, Path(tmp)),
            "tree": servers.REPO / "clients/python",
        }
        driver = sides["baseline"] / "busd_client" / "sync_driver.py"
        batches_in_baseline = driver.exists() and "def publish_many" in driver.read_text()
        nats_server = None
        if not args.no_nats:
            try:
                import nats  # noqa: F401

                nats_server = servers.start_nats()
            except (ImportError, servers.Unavailable) as exc:
                sys.stderr.write(f"nats-py's figure skipped: {exc}\n")
        busd = servers.start_busd()
        try:
            for r in range(args.repeat):
                if nats_server is not None:
                    res = run_worker(sides["tree"], NATS, nats_server.pub_endpoint, args.messages)
                    nats_runs.append(res)
                    sys.stderr.write(
                        f"repeat {r + 1} nats-py             {res['cpu_us']:.2f} µs CPU/msg"
                        f" ({res['thread_us']:.2f} main thread, best segment "
                        f"{res['best_us']:.2f})\n"
                    )
                for kind in kinds:
                    order = ["baseline", "tree"] if r % 2 == 0 else ["tree", "baseline"]
                    for side in order:
                        if side == "baseline" and kind in BATCH_KINDS and not batches_in_baseline:
                            continue
                        res = run_worker(sides[side], kind, busd.pub_endpoint, args.messages)
                        runs[kind][side].append(res)
                        sys.stderr.write(
                            f"repeat {r + 1} {kind:10} {side:8} {res['cpu_us']:.2f} µs CPU/msg"
                            f" ({res['thread_us']:.2f} main thread, best segment "
                            f"{res['best_us']:.2f}), failed {res['failed']}\n"
                        )
        finally:
            busd.stop()
            if nats_server is not None:
                nats_server.stop()
    print(
        f"baseline {args.baseline} ({head}) vs this tree; {args.repeat} repeats of "
        f"{args.messages} messages; medians; ratio: the median of tree/baseline pairs"
    )
    print("| publisher | figure | baseline | tree | ratio |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        for key, label in FIGURES.items():
            base = [x[key] for x in runs[kind]["baseline"]]
            tree = [x[key] for x in runs[kind]["tree"]]
            if not base:
                print(f"| {kind} | {label} | — | {statistics.median(tree):.2f} | |")
                continue
            ratio = statistics.median(t / b for t, b in zip(tree, base, strict=True))
            print(
                f"| {kind} | {label} | {statistics.median(base):.2f} | "
                f"{statistics.median(tree):.2f} | {ratio:.3f}× |"
            )
    if nats_runs:
        print()
        print("this tree against nats-py (same repeats; ratio: the median of tree/nats pairs)")
        print("| publisher | figure | nats-py | tree | ratio |")
        print("|---|---|---|---|---|")
        for kind in kinds:
            for key, label in FIGURES.items():
                nats_x = [x[key] for x in nats_runs]
                tree = [x[key] for x in runs[kind]["tree"]]
                ratio = statistics.median(t / b for t, b in zip(tree, nats_x, strict=True))
                print(
                    f"| {kind} | {label} | {statistics.median(nats_x):.2f} | "
                    f"{statistics.median(tree):.2f} | {ratio:.3f}× |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
