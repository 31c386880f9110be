"""The ``pool`` workload: what busd_client's pool clients cost and give, as ratios to the
single-broker clients measured in the same session (docs/performance.md, "Pool clients").

Three busd brokers of its own (metrics port on, default ``--warmup``; measured only once
``/readyz`` answers 200). Per repeat, interleaved so a noisy stretch hits baseline and pool
alike:

1. publish, flat out, no subscriber: Publisher -> broker 1 (baseline), PoolPublisher -> the
   same broker, PoolPublisher -> 3 brokers; messages settled per second (sent ÷ time from
   the first publish to the end of ``flush``) and publisher CPU per message;
2. end to end, flat out: Publisher -> broker 1 -> Subscriber (baseline) against
   PoolPublisher -> 3 brokers -> PoolSubscriber; delivered msg/s at the subscriber. And the
   receive loop's CPU per message, Subscriber and PoolSubscriber side by side on broker 1,
   same paced stream: what the dedup window costs;
3. failover: PoolPublisher -> 3 brokers -> PoolSubscriber at 5,000 msg/s; a window without
   a kill (baseline), then kill -9 of one broker: the longest gap between consecutive
   deliveries and the p99 / max end-to-end latency of messages arriving in each window;
   messages resent, duplicates dropped, lost. The killed broker is replaced for the next
   repeat (a fresh one warms up meanwhile).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from bench import metrics, servers
from bench.runner import READY_TIMEOUT, RESULT_GRACE, TrialError, Worker
from bench.servers import BusdOptions, Server, Unavailable, die_with_parent
from bench.session import Session
from bench.worker import percentiles

__all__ = ["KINDS", "STEPS_PER_REPEAT", "pool"]

BROKERS = 3
WINDOW = 1000  # the publishers' in-flight window (their default)
RECV_RATE = 20_000.0  # msg/s of the receive-loop comparison: both subscribers keep up
FAILOVER_RATE = 5_000.0
LEAD_IN = 0.2  # seconds after go before the no-kill window opens
KILL_LEAD = 0.25  # seconds of the kill window before the kill
# The trials of one repeat, in the order they run, and how progress lines name them.
KINDS = {
    "publish_plain_1": "publish, Publisher → 1 busd",
    "publish_pool_1": "publish, PoolPublisher → 1 busd",
    "e2e_plain": "end to end, Publisher → busd → Subscriber",
    "receive": "receive loop, Subscriber | PoolSubscriber",
    "publish_pool_3": "publish, PoolPublisher → 3 busd",
    "e2e_pool_3": "end to end, PoolPublisher → 3 busd → PoolSubscriber",
    "failover": f"failover, {FAILOVER_RATE:,.0f} msg/s, kill -9 of 1 of 3",
}
STEPS_PER_REPEAT = len(KINDS)
READY_WAIT = 15.0  # seconds a broker may take to answer /readyz 200 (warm-up is 2 s)


class PoolWorker(Worker):
    """A ``bench.pool_worker`` process (bench.runner's Worker runs ``bench.worker``)."""

    def __init__(self, role: str, spec: dict[str, Any]) -> None:
        self.role = role
        self.spec = spec
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in end()
        env = dict(
            os.environ, PYTHONPATH=str(servers.REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.pool_worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            cwd=servers.REPO,
            env=env,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the controller runs no threads
        )
        self._buf = b""


def start_broker(name: str) -> Server:
    """A busd like bench.servers starts it, with its metrics port on (for /readyz)."""
    port = servers.free_port()
    server = servers.start_busd(BusdOptions(extra=("--metrics", f"127.0.0.1:{port}")), name=name)
    server.notes["metrics"] = port
    return server


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def wait_ready(brokers: list[Server], timeout: float = READY_WAIT) -> None:
    """Until every broker's /readyz answers 200 (its warm-up is over)."""
    deadline = time.monotonic() + timeout
    for b in brokers:
        while not _ready(int(b.notes["metrics"])):
            if not b.alive():
                raise Unavailable(f"{b.name} exited: {b.log_tail()}")
            if time.monotonic() > deadline:
                raise Unavailable(f"{b.name}: /readyz not 200 after {timeout:g} s")
            time.sleep(0.05)


def _spec(driver: str, client: str, brokers: list[Server], **extra: Any) -> dict[str, Any]:
    return {
        "driver": driver,
        "client": client,
        "window": WINDOW,
        "pub_endpoints": [b.pub_endpoint for b in brokers],
        "sub_endpoints": [b.sub_endpoint for b in brokers],
        **extra,
    }


def run_pool_trial(
    pub: dict[str, Any],
    subs: list[dict[str, Any]],
    *,
    expected_s: float,
    kill: tuple[Server, float] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], int | None]:
    """One publisher, some subscribers; both roles say ``ready`` before ``go``. ``kill``:
    (broker, seconds after go) to SIGKILL it. Returns the results and the kill's time
    (monotonic ns)."""
    workers: list[Worker] = []
    try:
        sub_workers = [PoolWorker("subscriber", s) for s in subs]
        workers += sub_workers
        pub_worker = PoolWorker("publisher", pub)
        workers.append(pub_worker)
        for w in workers:
            if (line := w.readline(READY_TIMEOUT)) != "ready":
                raise TrialError(f"{w.role}: expected 'ready', got {line[:200]!r}")
        go = time.monotonic()
        pub_worker.tell("go")
        killed = None
        if kill is not None:
            victim, after = kill
            time.sleep(max(0.0, go + after - time.monotonic()))
            victim.proc.kill()
            killed = time.monotonic_ns()
        pub_result = pub_worker.result(expected_s + RESULT_GRACE)
        for w in sub_workers:
            w.tell("stop")
        return pub_result, [w.result(RESULT_GRACE) for w in sub_workers], killed
    finally:
        for w in workers:
            w.end()


def settled_rate(pub: dict[str, Any]) -> float:
    span = (pub["t_settled"] - pub["t_start"]) / 1e9
    return pub["sent"] / span if span > 0 else 0.0


def _per_msg_us(cpu_s: float, n: int) -> float | None:
    return cpu_s / n * 1e6 if n else None


def publish(session: Session, client: str, brokers: list[Server]) -> dict[str, Any]:
    s = session.settings
    spec = _spec("pool-pub", client, brokers, **s.load())
    pub, _, _ = run_pool_trial(spec, [], expected_s=s.duration)
    return {
        "rate": settled_rate(pub),
        "cpu_us": _per_msg_us(pub["cpu_s"], pub["sent"]),
        "sent": pub["sent"],
        "failed": sum(pub["failed"].values()),
        "resent": pub.get("resent"),
    }


def end_to_end(session: Session, client: str, brokers: list[Server]) -> dict[str, Any]:
    s = session.settings
    pub, (sub,), _ = run_pool_trial(
        _spec("pool-pub", client, brokers, **s.load()),
        [_spec("pool-sub", client, brokers)],
        expected_s=s.duration,
    )
    return {
        "delivered": metrics.window_rate([sub]),
        "published": settled_rate(pub),
        "sent": pub["sent"],
        "received": sub["received"],
        "lost": pub["accepted"] - sub["received"],
        "duplicates": sub["duplicates"],
        "resent": pub.get("resent"),
        "subscriber_cpu_us": _per_msg_us(sub["cpu_s"], sub["received"]),
    }


def receive_cost(session: Session, broker: Server) -> dict[str, Any]:
    """Subscriber and PoolSubscriber on the same broker, the same paced stream."""
    s = session.settings
    spec = _spec("pool-pub", "plain", [broker], **s.load(rate=RECV_RATE))
    _, (plain, pooled), _ = run_pool_trial(
        spec,
        [_spec("pool-sub", "plain", [broker]), _spec("pool-sub", "pool", [broker])],
        expected_s=s.duration,
    )
    return {
        "plain_us": _per_msg_us(plain["loop_cpu_s"], plain["received"]),
        "pool_us": _per_msg_us(pooled["loop_cpu_s"], pooled["received"]),
        "plain_process_us": _per_msg_us(plain["cpu_s"], plain["received"]),
        "pool_process_us": _per_msg_us(pooled["cpu_s"], pooled["received"]),
        "plain_received": plain["received"],
        "pool_received": pooled["received"],
    }


def window_figures(
    arrivals: list[int], latencies: list[int], start: int, end: int, ref: int
) -> dict[str, Any]:
    """Deliveries arriving in [start, end) (monotonic ns): the longest gap between
    consecutive deliveries (pairs straddling an edge count) and where it began, in ms from
    ``ref`` (for the kill window, the kill: a pause the kill caused begins right after it);
    latency percentiles in ms."""
    lo, hi = bisect_left(arrivals, start), bisect_left(arrivals, end)
    gaps = [
        (arrivals[i] - arrivals[i - 1], arrivals[i - 1])
        for i in range(max(lo, 1), min(hi + 1, len(arrivals)))
    ]
    if arrivals and hi == len(arrivals):
        gaps.append((end - arrivals[-1], arrivals[-1]))  # nothing after: a stall to the end
    gap = max(gaps, default=None)
    lat = percentiles(latencies[lo:hi]) if hi > lo else None
    return {
        "n": hi - lo,
        "gap_ms": gap[0] / 1e6 if gap else None,
        "gap_start_ms": (gap[1] - ref) / 1e6 if gap else None,
        "p99_ms": lat["p99"] / 1000 if lat else None,
        "max_ms": lat["max"] / 1000 if lat else None,
    }


def failover(session: Session, brokers: list[Server], window_s: float) -> dict[str, Any]:
    """Paced pool traffic; the last broker is killed ``window_s`` + a bit after go."""
    duration = LEAD_IN + 2 * window_s + 0.2
    kill_after = LEAD_IN + window_s + KILL_LEAD
    pub, (sub,), killed = run_pool_trial(
        _spec("pool-pub", "pool", brokers, rate=FAILOVER_RATE, duration=duration),
        [_spec("pool-sub", "pool", brokers, record=True)],
        expected_s=duration,
        kill=(brokers[-1], kill_after),
    )
    assert killed is not None
    arrivals, latencies = sub["arrivals_ns"], sub["latency_ns"]
    quiet_start = pub["t_start"] + int(LEAD_IN * 1e9)
    kill_start = killed - int(KILL_LEAD * 1e9)
    span = int(window_s * 1e9)
    return {
        "baseline": window_figures(
            arrivals, latencies, quiet_start, quiet_start + span, quiet_start
        ),
        "kill": window_figures(arrivals, latencies, kill_start, kill_start + span, killed),
        "sent": pub["sent"],
        "accepted": pub["accepted"],
        "failed": pub["failed"],
        "received": sub["received"],
        "lost": pub["accepted"] - sub["received"],
        "resent": pub.get("resent"),
        "late_accepts": pub.get("late_accepts"),
        "duplicates": sub["duplicates"],
        "window_s": window_s,
        # proof the kill hit a broker in use: its connection dropped, it had carried some
        "victim": {k: pub["brokers"][-1][k] for k in ("accepted", "disconnects", "moved_away")},
    }


def _say(kind: str, fig: dict[str, Any]) -> str:
    if kind.startswith("publish"):
        return f"{fig['rate'] / 1000:.1f}k msg/s settled, {fig['cpu_us']:.2f} µs CPU/msg"
    if kind.startswith("e2e"):
        return f"{fig['delivered'] / 1000:.1f}k msg/s delivered, lost {fig['lost']}"
    if kind == "receive":
        return f"Subscriber {fig['plain_us']:.2f} µs/msg, PoolSubscriber {fig['pool_us']:.2f}"
    b, k = fig["baseline"], fig["kill"]
    return (
        f"gap {b['gap_ms']:.1f} -> {k['gap_ms']:.1f} ms (from kill "
        f"{k['gap_start_ms']:+.0f} ms), max latency {b['max_ms']:.1f} "
        f"-> {k['max_ms']:.1f} ms, resent {fig['resent']}, dup {fig['duplicates']}, "
        f"lost {fig['lost']}"
    )


def pool(session: Session) -> None:
    s = session.settings
    window_s = 1.5 if s.duration >= 1.0 else 1.25  # > attempt_timeout (1 s) after the kill
    out: dict[str, Any] = {
        "brokers": BROKERS,
        "window": WINDOW,
        "recv_rate": RECV_RATE,
        "failover_rate": FAILOVER_RATE,
        "failover_window_s": window_s,
        "runs": {k: [] for k in KINDS},
        # other work on the machine: the figures' noise depends on it
        "loadavg_start": os.getloadavg(),
    }
    session.results["pool"] = out
    brokers: list[Server] = []
    spent: list[Server] = []
    try:
        try:
            brokers = [start_broker(f"busd-pool{i}") for i in range(BROKERS)]
            out["argv"] = brokers[0].notes["argv"]
            wait_ready(brokers[:1])
        except Unavailable as exc:
            session.error("pool", "busd", exc)
            return
        plan: dict[str, Callable[[list[Server]], dict[str, Any]]] = {
            "publish_plain_1": lambda bs: publish(session, "plain", bs[:1]),
            "publish_pool_1": lambda bs: publish(session, "pool", bs[:1]),
            "e2e_plain": lambda bs: end_to_end(session, "plain", bs[:1]),
            "receive": lambda bs: receive_cost(session, bs[0]),
            "publish_pool_3": lambda bs: publish(session, "pool", bs),
            "e2e_pool_3": lambda bs: end_to_end(session, "pool", bs),
            "failover": lambda bs: failover(session, bs, window_s),
        }
        for rep in range(s.repeat):
            for kind, title in KINDS.items():
                try:
                    if kind == "publish_pool_3":
                        wait_ready(brokers)  # a replaced broker has warmed up meanwhile
                    fig = plan[kind](brokers)
                except (TrialError, Unavailable, OSError) as exc:
                    session.error("pool", kind, exc)
                    session.progress.step(f"pool · {title} · run {rep + 1}: failed")
                    continue
                out["runs"][kind].append(fig)
                session.progress.step(f"pool · {title} · run {rep + 1}: {_say(kind, fig)}")
            if not brokers[-1].alive() and rep + 1 < s.repeat:
                spent.append(brokers.pop())
                try:
                    brokers.append(start_broker(f"busd-pool{BROKERS + rep}"))
                except Unavailable as exc:
                    session.error("pool", "busd", exc)
                    break
    finally:
        for b in brokers + spent:
            b.stop()
    out["loadavg_end"] = os.getloadavg()
    out["median"] = summarise(out["runs"])


def _median(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for r in runs:
        v: Any = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, int | float):
            values.append(v)
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def paired_ratio(
    pool: list[dict[str, Any]], base: list[dict[str, Any]], *path: str
) -> float | None:
    """The median over repeats of pool ÷ baseline, each pair from the same repeat (seconds
    apart, so a slow stretch of the shared machine hits both); the ratio of the medians
    when a run failed and the pairs no longer line up."""
    if len(pool) != len(base):
        return _ratio(_median(pool, *path), _median(base, *path))
    pairs = [
        {"r": _ratio(_median([p], *path), _median([b], *path))}
        for p, b in zip(pool, base, strict=True)
    ]
    return _median(pairs, "r")


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians of every figure over the repeats, and the pool ÷ baseline ratios."""
    m: dict[str, Any] = {}
    for kind in ("publish_plain_1", "publish_pool_1", "publish_pool_3"):
        m[kind] = {k: _median(runs[kind], k) for k in ("rate", "cpu_us")}
    for kind in ("e2e_plain", "e2e_pool_3"):
        m[kind] = {
            k: _median(runs[kind], k)
            for k in ("delivered", "lost", "duplicates", "subscriber_cpu_us")
        }
    m["receive"] = {k: _median(runs["receive"], k) for k in ("plain_us", "pool_us")}
    fo = runs["failover"]
    m["failover"] = {
        w: {k: _median(fo, w, k) for k in ("gap_ms", "p99_ms", "max_ms")}
        for w in ("baseline", "kill")
    }
    m["failover"].update(
        {k: _median(fo, k) for k in ("resent", "duplicates", "lost", "late_accepts")}
    )
    m["failover"]["failed"] = _median([{"n": sum(r["failed"].values())} for r in fo], "n")
    base = runs["publish_plain_1"]
    m["ratios"] = {
        "publish_pool_1": paired_ratio(runs["publish_pool_1"], base, "rate"),
        "publish_pool_3": paired_ratio(runs["publish_pool_3"], base, "rate"),
        "publish_cpu_pool_1": paired_ratio(runs["publish_pool_1"], base, "cpu_us"),
        "publish_cpu_pool_3": paired_ratio(runs["publish_pool_3"], base, "cpu_us"),
        "e2e": paired_ratio(runs["e2e_pool_3"], runs["e2e_plain"], "delivered"),
        "receive_cpu": paired_ratio(
            [{"v": r["pool_us"]} for r in runs["receive"]],
            [{"v": r["plain_us"]} for r in runs["receive"]],
            "v",
        ),
        **{
            f"failover_{k}": paired_ratio([r["kill"] for r in fo], [r["baseline"] for r in fo], k)
            for k in ("gap_ms", "p99_ms", "max_ms")
        },
    }
    return m
