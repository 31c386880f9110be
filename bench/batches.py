"""The ``batch`` workload: 1 -> 1 flat-out by publisher batch size (issue 17), checks on.

- ``busd``: busd_client.Publisher(max_batch=N, linger=0.0) fed by ``publish_many`` N
  messages at a time (N = 1: one ``publish`` per message), what an application that has
  messages due together gets;
- ``busd-raw``: the raw protocol-v1 publisher sending N messages per ZeroMQ message
  (docs/protocol.md §1), the broker's own gain with a publisher that costs little.

Each row runs only where it can: the client's row needs busd_client's batching API
(``bench.drivers_zmq.client_batching_missing``), the raw row a busd whose replies advertise
``batch`` >= N (found by the check probe, ``bench.probe.Probe.batch``); a row that cannot
run says why in the table. Runs are interleaved by repeat like every workload; figures are
medians, ratios are to the first size (N = 1 by default, ``--batch-sizes``) and to NATS 1→1,
both of the same run.
"""

from __future__ import annotations

from typing import Any

from bench import metrics
from bench.drivers_zmq import client_batching_missing
from bench.servers import Unavailable
from bench.session import Session

SIZES = (1, 10, 100)  # the default sweep (--batch-sizes)
SYSTEMS = ("busd", "busd-raw")
KEYS = ("delivered", "lost", "server_cpu_us_per_msg", "publisher_cpu_us_per_msg")


def _advertised(session: Session) -> int:
    """The ``batch`` the shared busd's replies advertise (0: none, or no busd)."""
    try:
        server = session.pool.get("busd")
    except Unavailable:
        return 0
    return int(server.notes.get("checks", {}).get("batch", 0)) if server is not None else 0


def why_not(name: str, size: int, client_why: str | None, advertised: int) -> str | None:
    """Why system ``name`` cannot run batch size ``size`` here, or None."""
    if name == "busd" and size > 1 and client_why:
        return client_why
    if size > 1 and advertised < size:
        return (
            f"busd does not advertise batches of {size} (its replies say batch={advertised})"
            if advertised
            else "batching not available in this busd (its replies carry no 'batch')"
        )
    return None


def _spec(name: str, size: int, client_why: str | None) -> dict[str, Any]:
    if name == "busd-raw":
        return {"batch": size}
    return {} if client_why else {"max_batch": size}  # no API: today's Publisher, N = 1


def batch(session: Session) -> None:
    s = session.settings
    sizes = s.batch_sizes
    names = [n for n in session.available() if n in SYSTEMS]
    client_why = client_batching_missing()
    advertised = _advertised(session)
    out: dict[str, Any] = {
        "sizes": list(sizes),
        "advertised": advertised,
        "client_batching": client_why or "available",
        "unavailable": {},
        "runs": {n: {str(k): [] for k in sizes} for n in names},
    }
    session.results["batch"] = out
    for name in names:
        for size in sizes:
            if (why := why_not(name, size, client_why, advertised)) is not None:
                out["unavailable"].setdefault(name, {})[str(size)] = why
    for rep in range(s.repeat):
        for size in sizes:
            for name in names:
                title = f"batch sweep · {name} · max_batch {size} · run {rep + 1}"
                if str(size) in out["unavailable"].get(name, {}):
                    session.progress.step(
                        f"{title}: not run ({out['unavailable'][name][str(size)]})"
                    )
                    continue
                got = session.trial(
                    "batch",
                    name,
                    1,
                    1,
                    expected_s=s.duration,
                    **s.load(**_spec(name, size, client_why)),
                )
                if got is None:
                    session.progress.step(f"{title}: failed")
                    continue
                figures = got[1]
                out["runs"][name][str(size)].append(figures)
                session.progress.step(
                    f"{title}: {figures['delivered'] / 1000:.1f}k msg/s, lost {figures['lost']}"
                )
    out["median"] = {
        name: {size: _medians(runs) if runs else None for size, runs in by_size.items()}
        for name, by_size in out["runs"].items()
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    m: dict[str, Any] = {k: metrics.median_of(runs, k) for k in KEYS}
    busd = [r["busd"] for r in runs if "busd" in r]
    m["zero_loss_all_runs"] = bool(busd) and all(b["zero_loss"] for b in busd)
    m["every_publish_answered"] = bool(busd) and all(b["every_publish_answered"] for b in busd)
    return m


def steps(repeat: int, sizes: tuple[int, ...], names: list[str]) -> int:
    return repeat * len(sizes) * len(set(names) & set(SYSTEMS))
