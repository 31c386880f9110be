"""Figures from one trial's raw results: delivered rates, loss, busd's answers, CPU cost."""

from __future__ import annotations

import os
import statistics
from typing import Any

from bench.runner import Trial

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_cpu(pid: int) -> dict[str, float]:
    """User + system CPU seconds of ``pid``'s threads so far, summed by thread name (busd's
    own thread is named after the process; libzmq's are ``ZMQbg/IO/0``, ``ZMQbg/Reaper``)."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                head, _, rest = fh.read().rpartition(")")
        except OSError:
            continue  # the thread ended
        name = head.split("(", 1)[1]
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return out


def window_rate(subs: list[dict[str, Any]]) -> float:
    """Messages delivered per second over all subscribers, from the first message any of
    them received to the last."""
    got = [s for s in subs if s["received"]]
    if not got:
        return 0.0
    span = (max(s["t_last"] for s in got) - min(s["t_first"] for s in got)) / 1e9
    total = sum(s["received"] for s in got)
    return total / span if span > 0 else 0.0


def publish_rate(pubs: list[dict[str, Any]]) -> float:
    span = (max(p["t_end"] for p in pubs) - min(p["t_start"] for p in pubs)) / 1e9
    return sum(p["sent"] for p in pubs) / span if span > 0 else 0.0


def answered(pub: dict[str, Any]) -> dict[str, int] | None:
    """busd's answers to one publisher (None for systems that do not answer)."""
    if "answered" in pub:  # raw protocol publisher
        return {
            "answered": pub["answered"],
            "accepted": pub["accepted"],
            "unanswered": pub["unanswered"],
            "rejected": sum(pub["rejected"].values()),
        }
    if "failures" in pub:  # busd_client.Publisher
        return {
            "answered": pub["sent"] - pub["unanswered"],
            "accepted": pub["sent"] - pub["failures"],
            "unanswered": pub["unanswered"],
            "rejected": sum(pub["rejected"].values()),
        }
    return None


def delivery(trial: Trial, cpu: float | None = None) -> dict[str, Any]:
    """The common figures of a trial. ``cpu``: the server's CPU seconds during it."""
    pubs, subs = trial.publishers, trial.subscribers
    sent = sum(p["sent"] for p in pubs)
    received = sum(s["received"] for s in subs)
    out: dict[str, Any] = {
        "delivered": window_rate(subs),
        "published": publish_rate(pubs),
        "sent": sent,
        "received": received,
        "expected": sent * len(subs),
        "lost": sent * len(subs) - received,
        "backlog_s": max(
            0.0, (max(s["t_last"] for s in subs) - max(p["t_end"] for p in pubs)) / 1e9
        )
        if received
        else None,
    }
    answers = [a for p in pubs if (a := answered(p)) is not None]
    if answers:
        acc = {k: sum(a[k] for a in answers) for k in answers[0]}
        rejected: dict[str, int] = {}
        for p in pubs:
            for code, n in p.get("rejected", {}).items():
                rejected[code] = rejected.get(code, 0) + n
        out["busd"] = {
            **acc,
            "rejected_by_code": rejected,
            "every_publish_answered": acc["answered"] == sent,
            "zero_loss": acc["accepted"] == sent and received == acc["accepted"] * len(subs),
        }
        out["lost"] = acc["accepted"] * len(subs) - received
    pub_cpu = [p["cpu_s"] for p in pubs if "cpu_s" in p]
    if pub_cpu and sent:  # includes waiting for the last replies (busd) or the flush
        out["publisher_cpu_us_per_msg"] = sum(pub_cpu) / sent * 1e6
    if cpu is not None and received:
        out["server_cpu_s"] = cpu
        out["server_cpu_us_per_msg"] = cpu / received * 1e6
    for s in subs:
        if "latency_us" in s:
            out["latency_us"] = s["latency_us"]
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def median_latency(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    lat = [r["latency_us"] for r in runs if "latency_us" in r]
    if not lat:
        return None
    return {q: statistics.median(x[q] for x in lat) for q in ("p50", "p99", "p99.9", "max")}
