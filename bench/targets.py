"""Issue 17's targets against one session's JSON record: ``python -m bench.targets FILE``.

Every figure is a ratio (or a busd-only figure) from the same run, as the issue asks; rows
whose workload did not run say so. Prints a markdown table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Doc = dict[str, Any]


def _med(doc: Doc, workload: str, system: str) -> dict[str, Any]:
    median: dict[str, Any] = doc["results"].get(workload, {}).get(system, {}).get("median", {})
    return median


def _ratio(doc: Doc, workload: str, a: str, b: str, key: str = "delivered") -> float | None:
    x, y = _med(doc, workload, a).get(key), _med(doc, workload, b).get(key)
    return x / y if x and y else None


def _lat(doc: Doc, system: str, q: str) -> float | None:
    lat = _med(doc, "latency", system).get("latency_us")
    return lat[q] if lat else None


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**not met**")


def _at_least(v: float | None, target: float) -> bool | None:
    return None if v is None else v >= target


def rows(doc: Doc, busd: str = "busd") -> list[tuple[str, str, str, str]]:
    """(target, figure, this run, verdict) for ``busd`` (the busd_client row, or busd-raw)."""
    out: list[tuple[str, str, str, str]] = []

    def ratio_row(title: str, target: float, get: Callable[[], float | None]) -> None:
        v = get()
        out.append((title, f"≥ {target:.1f}×", _x(v), _verdict(_at_least(v, target))))

    cpu = _med(doc, "flat", busd).get("server_cpu_us_per_msg")
    out.append(
        (
            "busd CPU µs per delivered message, checks on (1→1 flat-out)",
            "≤ 3 µs",
            "—" if cpu is None else f"{cpu:.2f} µs",
            _verdict(None if cpu is None else cpu <= 3.0),
        )
    )
    ratio_row("1→1 flat-out ÷ NATS", 1.0, lambda: _ratio(doc, "flat", busd, "nats"))
    ratio_row("1→1 flat-out ÷ zmq.proxy", 0.8, lambda: _ratio(doc, "flat", busd, "zmq.proxy"))
    flat = _med(doc, "flat", busd)
    if "busd_zero_loss_all_runs" in flat:
        ok = flat["busd_zero_loss_all_runs"] and flat["busd_every_publish_answered"]
        out.append(
            (
                "1→1: every publish answered, 0 loss",
                "every run",
                "yes" if ok else "NO",
                _verdict(ok),
            )
        )
    ratio_row("10→1 ÷ NATS", 1.0, lambda: _ratio(doc, "fanin", busd, "nats"))
    topics = doc.get("settings", {}).get("topics", 100_000)
    ratio_row(f"{topics:,} topics ÷ NATS", 1.0, lambda: _ratio(doc, "topics", busd, "nats"))
    ratio_row("1→10 fan-out ÷ zmq.proxy", 0.8, lambda: _ratio(doc, "fanout", busd, "zmq.proxy"))
    p99, nats99 = _lat(doc, busd, "p99"), _lat(doc, "nats", "p99")
    out.append(
        (
            "latency at 5,000 msg/s: p99 ÷ NATS p99",
            "≤ 1.0×",
            _x(p99 / nats99 if p99 and nats99 else None),
            _verdict(None if not (p99 and nats99) else p99 <= nats99),
        )
    )
    p999 = _lat(doc, busd, "p99.9")
    out.append(
        (
            "latency at 5,000 msg/s: p99.9",
            "< 3 ms",
            "—" if p999 is None else f"{p999 / 1000:.2f} ms",
            _verdict(None if p999 is None else p999 < 3000),
        )
    )
    mem = doc["results"].get("memory", {})
    if "bound_held" in mem:
        out.append(
            (
                "stalled-subscriber memory bound",
                "held",
                f"+{mem['growth_kib'] / 1024:.1f} MiB",
                _verdict(mem["bound_held"]),
            )
        )
    return out


def others(doc: Doc) -> list[str]:
    """The same run's other ratios issue 17 asks for: 1 KiB, the batch sweep, two busd."""
    lines = []
    for busd in ("busd", "busd-raw"):
        if _med(doc, "flat1k", busd):
            lines.append(
                f"- 1 KiB 1→1, {busd}: {_x(_ratio(doc, 'flat1k', busd, 'nats'))} NATS, "
                f"{_x(_ratio(doc, 'flat1k', busd, 'zmq.proxy'))} zmq.proxy"
            )
    batch = doc["results"].get("batch", {})
    nats = _med(doc, "flat", "nats").get("delivered")
    for busd, by_size in batch.get("median", {}).items():
        first = next(iter(by_size.values()), None) or {}
        cells = []
        for size, m in by_size.items():
            if not m:
                cells.append(f"{size}: not run")
                continue
            d = m.get("delivered")
            cells.append(
                f"{size}: {_x(d / first['delivered'] if d and first.get('delivered') else None)}"
                f" of the first, {_x(d / nats if d and nats else None)} NATS, busd "
                f"{m.get('server_cpu_us_per_msg') or 0:.2f} µs/msg"
            )
        lines.append(f"- batch sweep, {busd}, max_batch " + "; ".join(cells))
    cores = doc["results"].get("cores", {}).get("median", {}).get("ratios")
    if cores:
        lines.append(
            f"- two busd ÷ one: busd_client {_x(cores['client_delivered'])} delivered "
            f"({_x(cores['client_busd_cpu_us_per_msg'])} CPU/msg), raw publishers "
            f"{_x(cores['raw_delivered'])} ({_x(cores['raw_busd_cpu_us_per_msg'])} CPU/msg)"
        )
    return lines


def render(doc: Doc) -> str:
    m = doc["meta"]
    load = " ".join(f"{x:.1f}" for x in m["machine"].get("loadavg", ()))
    lines = [
        f"issue 17 targets, run {m['date']}, `{m['command']}`, nproc {m['machine']['nproc']}, "
        f"load average at start {load or '?'}",
        "",
    ]
    shown = [b for b in ("busd", "busd-raw") if b in doc["systems"]]
    if shown:
        table = [rows(doc, b) for b in shown]
        lines += [
            "| target | goal | " + " | ".join(shown) + " |",
            "|---|---|" + "---|" * len(shown),
        ]
        for i, (title, goal, _, _) in enumerate(table[0]):
            cells = " | ".join(f"{t[i][2]} ({t[i][3]})" for t in table)
            lines.append(f"| {title} | {goal} | {cells} |")
        lines.append("")
    return "\n".join(lines + others(doc)) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m bench.targets bench/results/<stamp>.json\n")
        return 2
    sys.stdout.write(render(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
