"""The ``cores`` workload: one busd against two busd processes as a pool on the same host
(issue 17, "More than one core"; docs/performance.md).

Two brokers of its own, every check on and proven by ``bench.probe`` (which also waits out
their warm-up). Two publishers flat out, one subscriber, per repeat (interleaved):

- ``client_1``: two busd_client.Publisher -> busd A -> busd_client.Subscriber;
- ``client_2``: two PoolPublisher([A, B]) -> A and B -> PoolSubscriber([A, B]) (round
  robin per message, duplicates dropped): what the pool clients give on one host;
- ``raw_1``: two raw protocol-v1 publishers -> A -> stock SUB;
- ``raw_2``: raw publisher 1 -> A, raw publisher 2 -> B -> one stock SUB on both (ingress
  sharded by publisher): the brokers' own scaling, with clients that cost little.

Figures: aggregate delivered msg/s at the subscriber, and the busd processes' CPU (summed)
per delivered message over the trial; ratios two ÷ one from the same repeat.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from bench import metrics, probe
from bench.pool_clients import PoolWorker, settled_rate
from bench.runner import READY_TIMEOUT, RESULT_GRACE, TrialError, Worker, run_trial
from bench.servers import BusdOptions, Server, Unavailable
from bench.session import Session
from bench.systems import SYSTEMS, specs

PUBLISHERS = 2
WINDOW = 1000
KINDS = {
    "client_1": "2 × Publisher → 1 busd → Subscriber",
    "client_2": "2 × PoolPublisher → 2 busd → PoolSubscriber",
    "raw_1": "2 × raw publisher → 1 busd → SUB",
    "raw_2": "raw publisher → busd A, raw publisher → busd B → one SUB on both",
}
STEPS_PER_REPEAT = len(KINDS)


def _cpu(brokers: list[Server]) -> float | None:
    values = [metrics.cpu_seconds(b.pid) for b in brokers]
    return sum(v for v in values if v is not None) if None not in values else None


def _pool_spec(driver: str, client: str, brokers: list[Server], **extra: Any) -> dict[str, Any]:
    return {
        "driver": driver,
        "client": client,
        "window": WINDOW,
        "pub_endpoints": [b.pub_endpoint for b in brokers],
        "sub_endpoints": [b.sub_endpoint for b in brokers],
        **extra,
    }


def clients(session: Session, brokers: list[Server], expected_s: float) -> dict[str, Any]:
    """busd_client's publishers and subscriber (plain for one broker, pool for more)."""
    client = "plain" if len(brokers) == 1 else "pool"
    load = session.settings.load()
    workers: list[Worker] = []
    try:
        sub = PoolWorker("subscriber", _pool_spec("pool-sub", client, brokers))
        pubs = [
            PoolWorker("publisher", _pool_spec("pool-pub", client, brokers, index=i, **load))
            for i in range(PUBLISHERS)
        ]
        workers = [sub, *pubs]
        for w in workers:
            if (line := w.readline(READY_TIMEOUT)) != "ready":
                raise TrialError(f"{w.role}: expected 'ready', got {line[:200]!r}")
        cpu0 = _cpu(brokers)
        for w in pubs:
            w.tell("go")
        results = [w.result(expected_s + RESULT_GRACE) for w in pubs]
        cpu1 = _cpu(brokers)
        sub.tell("stop")
        got = sub.result(RESULT_GRACE)
    finally:
        for w in workers:
            w.end()
    accepted = sum(r["accepted"] for r in results)
    used = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    # pool: the measured messages each broker accepted, all publishers together
    shares = [
        sum(r["brokers"][k]["accepted"] - r["brokers_before"][k]["accepted"] for r in results)
        for k in range(len(brokers))
        if all("brokers" in r for r in results)
    ]
    return {
        "delivered": metrics.window_rate([got]),
        "published": sum(settled_rate(r) for r in results),
        "sent": sum(r["sent"] for r in results),
        "accepted": accepted,
        "received": got["received"],
        "lost": accepted - got["received"],
        "duplicates": got["duplicates"],
        "failed": sum(sum(r["failed"].values()) for r in results),
        "busd_cpu_s": used,
        "busd_cpu_us_per_msg": used / got["received"] * 1e6 if used and got["received"] else None,
        "per_broker_accepted": shares,
    }


def raw(session: Session, brokers: list[Server], expected_s: float) -> dict[str, Any]:
    """Raw publishers, publisher i to broker i mod len(brokers); one SUB on every broker."""
    pubs, subs = specs(SYSTEMS["busd-raw"], brokers[0], PUBLISHERS, 1, **session.settings.load())
    for i, p in enumerate(pubs):
        p["endpoint"] = brokers[i % len(brokers)].pub_endpoint
    subs[0]["endpoints"] = [b.sub_endpoint for b in brokers]
    cpu: list[float | None] = [None]

    def mark() -> None:
        cpu[0] = _cpu(brokers)

    trial = run_trial(pubs, subs, on_go=mark, expected_s=expected_s)
    after = _cpu(brokers)
    used = after - cpu[0] if after is not None and cpu[0] is not None else None
    fig = metrics.delivery(trial, used)
    fig["busd_cpu_us_per_msg"] = fig.pop("server_cpu_us_per_msg", None)
    return fig


def _say(fig: dict[str, Any]) -> str:
    us = fig.get("busd_cpu_us_per_msg")
    return (
        f"{fig['delivered'] / 1000:.1f}k msg/s delivered, lost {fig['lost']}, busd "
        f"{'—' if us is None else f'{us:.2f}'} µs CPU/msg"
    )


def cores(session: Session) -> None:
    s = session.settings
    out: dict[str, Any] = {
        "publishers": PUBLISHERS,
        "runs": {k: [] for k in KINDS},
        "loadavg_start": list(os.getloadavg()),
    }
    session.results["cores"] = out
    brokers: list[Server] = []
    try:
        try:
            names = ["busd-core1", "busd-core2"]
            opts = BusdOptions(extra=s.busd_flags)
            brokers = probe.start_checked_all(names, opts, timeout=s.probe_timeout)
        except Unavailable as exc:
            session.error("cores", "busd", exc)
            return
        out["checks"] = [b.notes["checks"] for b in brokers]
        out["argv"] = brokers[0].notes["argv"]
        plan = {
            "client_1": lambda: clients(session, brokers[:1], s.duration),
            "client_2": lambda: clients(session, brokers, s.duration),
            "raw_1": lambda: raw(session, brokers[:1], s.duration),
            "raw_2": lambda: raw(session, brokers, s.duration),
        }
        for rep in range(s.repeat):
            for kind, title in KINDS.items():
                try:
                    fig = plan[kind]()
                except (TrialError, Unavailable, OSError) as exc:
                    session.error("cores", kind, exc)
                    session.progress.step(f"cores · {title} · run {rep + 1}: failed")
                    continue
                out["runs"][kind].append(fig)
                session.progress.step(f"cores · {title} · run {rep + 1}: {_say(fig)}")
    finally:
        for b in brokers:
            b.stop()
    out["loadavg_end"] = list(os.getloadavg())
    out["median"] = summarise(out["runs"])


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def _paired(two: list[dict[str, Any]], one: list[dict[str, Any]], key: str) -> float | None:
    """Median over repeats of two ÷ one, each pair from the same repeat."""
    ratios = [
        a[key] / b[key]
        for a, b in zip(two, one, strict=False)
        if isinstance(a.get(key), int | float) and b.get(key)
    ]
    return statistics.median(ratios) if ratios else None


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    m: dict[str, Any] = {
        kind: {k: _median(runs[kind], k) for k in ("delivered", "lost", "busd_cpu_us_per_msg")}
        for kind in KINDS
    }
    m["ratios"] = {
        f"{side}_{k}": _paired(runs[f"{side}_2"], runs[f"{side}_1"], k)
        for side in ("client", "raw")
        for k in ("delivered", "busd_cpu_us_per_msg")
    }
    return m
