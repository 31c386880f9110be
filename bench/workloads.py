"""The workloads every system runs: flat-out (small and 1 KiB messages), paced search,
fan-out, fan-in, latency, topics.

Runs are interleaved (repeat 1 of every system, then repeat 2, ...) so a noisy stretch on
the shared machine hurts every system alike; figures are medians over the repeats.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench import metrics
from bench.session import Session

PACED_SENT_MIN = 0.95  # a paced step passes only if the publisher kept up with the offer...
BACKLOG_MAX = 0.1  # ... and the last message arrived within this long (+5 %) of the last send
FALLBACK_CEILING = 50_000.0  # msg/s, when even the flat-out probe failed


def _fmt(rate: float) -> str:
    return f"{rate / 1000:.1f}k msg/s"


def _summarise(session: Session, workload: str, keys: tuple[str, ...]) -> None:
    for per_system in session.results.get(workload, {}).values():
        runs = per_system["runs"]
        median: dict[str, Any] = {k: metrics.median_of(runs, k) for k in keys}
        if any("latency_us" in r for r in runs):
            median["latency_us"] = metrics.median_latency(runs)
        busd = [r["busd"] for r in runs if "busd" in r]
        if busd:
            median["busd_zero_loss_all_runs"] = all(b["zero_loss"] for b in busd)
            median["busd_every_publish_answered"] = all(b["every_publish_answered"] for b in busd)
        per_system["median"] = median


def _repeat(
    session: Session,
    workload: str,
    title: str,
    *,
    n_pubs: int,
    n_subs: int,
    expected_s: float,
    **spec: Any,
) -> None:
    names = session.available()
    for rep in range(session.settings.repeat):
        for name in names:
            got = session.trial(workload, name, n_pubs, n_subs, expected_s=expected_s, **spec)
            if got is None:
                session.progress.step(f"{title} · {name} · run {rep + 1}: failed")
                continue
            figures = got[1]
            session.record(workload, name, figures)
            extra = ""
            if "latency_us" in figures:
                lat = figures["latency_us"]
                extra = f", p50/p99/p99.9 {lat['p50']:.0f}/{lat['p99']:.0f}/{lat['p99.9']:.0f} µs"
            session.progress.step(
                f"{title} · {name} · run {rep + 1}: "
                f"{_fmt(figures['delivered'])}, lost {figures['lost']}{extra}"
            )
    _summarise(
        session,
        workload,
        ("delivered", "published", "lost", "server_cpu_us_per_msg", "publisher_cpu_us_per_msg"),
    )


def flat(session: Session) -> None:
    """1 -> 1 flat-out: delivered msg/s; for busd every publish answered and 0 loss."""
    s = session.settings
    _repeat(session, "flat", "1→1 flat-out", n_pubs=1, n_subs=1, expected_s=s.duration, **s.load())


def flat1k(session: Session) -> None:
    """1 -> 1 flat-out with 1 KiB envelopes (bench.message.DATA_1K): delivered msg/s."""
    s = session.settings
    _repeat(
        session,
        "flat1k",
        "1→1 flat-out, 1 KiB",
        n_pubs=1,
        n_subs=1,
        expected_s=s.duration,
        **s.load(payload="1k"),
    )


def fanout(session: Session) -> None:
    """1 -> N subscribers: aggregate delivered msg/s."""
    s = session.settings
    _repeat(
        session,
        "fanout",
        f"1→{s.fan} fan-out",
        n_pubs=1,
        n_subs=s.fan,
        expected_s=s.duration,
        **s.load(),
    )


def fanin(session: Session) -> None:
    """N publishers -> 1 subscriber."""
    s = session.settings
    _repeat(
        session,
        "fanin",
        f"{s.fan}→1 fan-in",
        n_pubs=s.fan,
        n_subs=1,
        expected_s=s.duration,
        **s.load(),
    )


def latency(session: Session) -> None:
    """One-way latency percentiles at a fixed offered rate."""
    s = session.settings
    spec = {"rate": s.latency_rate, "latency": True, "duration": s.latency_duration}
    if s.messages is not None:
        spec["count"] = s.messages
    _repeat(
        session,
        "latency",
        f"latency at {s.latency_rate:.0f}/s",
        n_pubs=1,
        n_subs=1,
        expected_s=s.latency_duration,
        **spec,
    )


def topics(session: Session) -> None:
    """Flat-out over many distinct topics (each once), subscriber on a prefix/wildcard."""
    s = session.settings
    count = s.messages if s.messages is not None else s.topics
    _repeat(
        session,
        "topics",
        f"{s.topics:,} topics",
        n_pubs=1,
        n_subs=1,
        expected_s=30.0,
        topics=s.topics,
        count=count,
    )


def _paced_step(session: Session, name: str, rate: float) -> tuple[bool, dict[str, Any]]:
    s = session.settings
    spec: dict[str, Any] = {"rate": rate, "duration": s.paced_step}
    if s.messages is not None:
        spec["count"] = s.messages
    got = session.trial("paced", name, 1, 1, expected_s=s.paced_step, **spec)
    if got is None:
        return False, {"offered": rate, "error": True}
    figures = got[1]
    figures["offered"] = rate
    kept_up = figures["published"] >= PACED_SENT_MIN * rate
    backlog = figures["backlog_s"]
    in_time = backlog is not None and backlog <= BACKLOG_MAX + 0.05 * s.paced_step
    answered = figures.get("busd", {}).get("zero_loss", True)
    ok = figures["lost"] == 0 and kept_up and in_time and answered
    figures["passed"] = ok
    return ok, figures


def paced(session: Session) -> None:
    """Highest loss-free paced rate: a bisection over offered rates.

    A step passes when nothing was lost, the publisher sent at least 95 % of the offer and
    the subscriber had everything within 0.1 s (+5 % of the step) of the last send, i.e.
    offered = delivered with no growing backlog. The search starts at 80 % of this session's
    flat-out figure (measured briefly when the flat workload did not run) and halves the
    bracket [0, 1.15 x flat-out] each step.
    """
    s = session.settings
    names = session.available()
    flat_medians = session.results.get("flat", {})
    ceilings: dict[str, float] = {}
    for name in names:
        ceiling = flat_medians.get(name, {}).get("median", {}).get("delivered")
        if not ceiling:  # no flat-out figure in this session: measure one, briefly
            got = session.trial(
                "paced", name, 1, 1, expected_s=s.paced_step, **s.load(duration=s.paced_step)
            )
            ceiling = got[1]["delivered"] if got is not None else 0.0
            session.progress.note(f"paced search · {name}: flat-out ceiling {_fmt(ceiling)}")
        ceilings[name] = ceiling or FALLBACK_CEILING
    for rep in range(s.repeat):
        for name in names:
            ceiling = ceilings[name]
            lo, hi = 0.0, ceiling * 1.15
            rate = ceiling * 0.8
            steps = []
            for k in range(s.paced_steps):
                ok, figures = _paced_step(session, name, rate)
                steps.append(figures)
                session.progress.step(
                    f"paced search · {name} · run {rep + 1} · step {k + 1}: "
                    f"{_fmt(rate)} {'ok' if ok else 'lossy/late'}"
                )
                if ok:
                    lo = rate
                else:
                    hi = rate
                rate = (lo + hi) / 2 if lo else hi * 0.6
            session.record("paced", name, {"loss_free": lo, "first_failed": hi, "steps": steps})
    for per_system in session.results.get("paced", {}).values():
        runs = per_system["runs"]
        per_system["median"] = {
            "loss_free": statistics.median(r["loss_free"] for r in runs),
            "first_failed": statistics.median(r["first_failed"] for r in runs),
        }
