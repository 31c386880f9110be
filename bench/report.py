"""The session's table (markdown, on stdout) and its JSON record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import ruby_publisher, state, systems
from bench.session import Session

RATE_COLUMNS = (
    ("flat", "delivered", "1→1 flat-out delivered"),
    ("flat1k", "delivered", "1→1 flat-out, 1 KiB messages"),
    ("paced", "loss_free", "highest loss-free paced rate"),
    ("fanout", "delivered", "1→{fan} fan-out, aggregate"),
    ("fanin", "delivered", "{fan}→1 delivered"),
    ("topics", "delivered", "{topics:,} topics delivered"),
)
PEERS = (("zmq.proxy", "zmq.proxy"), ("nats", "NATS"))


def rate(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / 1000:.1f}k" if v < 100_000 else f"{v / 1000:.0f}k"


def _median(session: Session, workload: str, system: str) -> dict[str, Any]:
    median: dict[str, Any] = session.results.get(workload, {}).get(system, {}).get("median", {})
    return median


def _latency(session: Session, system: str) -> dict[str, float] | None:
    lat: dict[str, float] | None = _median(session, "latency", system).get("latency_us")
    return lat


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "—"


def main_table(session: Session) -> list[str]:
    s = session.settings
    heads = [title.format(fan=s.fan, topics=s.topics) for _, _, title in RATE_COLUMNS]
    lat_head = f"latency at {s.latency_rate:,.0f} msg/s, p50 / p99 / p99.9 µs"
    lines = [
        "| system | " + " | ".join(heads) + f" | {lat_head} | 1→1 lost |",
        "|---" * (len(heads) + 3) + "|",
    ]
    shown = [n for n in session.systems if n not in session.skipped]
    for name in shown:
        cells = [rate(_median(session, w, name).get(k)) for w, k, _ in RATE_COLUMNS]
        if cells[2] != "—":  # the paced search's figure is a bisection's bracket
            cells[2] = "~" + cells[2]
        lat = _latency(session, name)
        lat_cell = f"{lat['p50']:,.0f} / {lat['p99']:,.0f} / {lat['p99.9']:,.0f}" if lat else "—"
        lost = _median(session, "flat", name).get("lost")
        lines.append(
            f"| {systems.SYSTEMS[name].label} | "
            + " | ".join(cells)
            + f" | {lat_cell} | {'—' if lost is None else f'{lost:,.0f}'} |"
        )
    if "busd" in shown and "busd-curve" in shown:  # issue 12: what authentication costs
        lines.append(_ratio_row(session, "busd-curve", "busd", "busd-curve ÷ busd (CURVE cost)"))
    for busd in systems.BUSD_SYSTEMS:
        if busd not in shown:
            continue
        for peer, peer_label in PEERS:
            if peer not in shown:
                continue
            lines.append(_ratio_row(session, busd, peer, f"{busd} ÷ {peer_label}"))
    return lines


def _ratio_row(session: Session, a_name: str, b_name: str, title: str) -> str:
    cells = [
        _ratio(_median(session, w, a_name).get(k), _median(session, w, b_name).get(k))
        for w, k, _ in RATE_COLUMNS
    ]
    a, b = _latency(session, a_name), _latency(session, b_name)
    lat_cell = " / ".join(_ratio(a[q], b[q]) for q in ("p50", "p99", "p99.9")) if a and b else "—"
    return f"| **{title}** | " + " | ".join(cells) + f" | {lat_cell} (lower is better) | |"


def busd_lines(session: Session) -> list[str]:
    out = []
    for key in ("busd", "busd-curve"):
        server = session.pool.running.get(key)
        if server is not None:  # running means proven (bench.probe.start_checked)
            c = server.notes.get("checks", {})
            auth = " (CURVE authentication on, probe with keys)" if key == "busd-curve" else ""
            out.append(
                f"- {key} checks proven on by probe{auth}: schema ON, rate limit ON (answers "
                f"{c.get('codes')} after {c.get('rounds')} round(s), {c.get('waited_ms')} ms "
                "waiting out warm-up)"
            )
        failed = session.pool.failed.get(key)
        if failed is not None:
            out.append(f"- {key} NOT MEASURED: {failed}")
    for name in systems.BUSD_SYSTEMS:
        for workload in ("flat", "flat1k", "fanout", "fanin", "topics"):
            med = _median(session, workload, name)
            if "busd_zero_loss_all_runs" in med:
                out.append(
                    f"- {name} · {workload}: every publish answered in every run: "
                    f"{'yes' if med['busd_every_publish_answered'] else 'NO'}; "
                    f"0 loss in every run: "
                    f"{'yes' if med['busd_zero_loss_all_runs'] else 'NO'}"
                )
    return out


def cpu_lines(session: Session) -> list[str]:
    rows = []
    for name in session.systems:
        med = _median(session, "flat", name)
        server, pub = med.get("server_cpu_us_per_msg"), med.get("publisher_cpu_us_per_msg")
        if server is not None or pub is not None:
            rows.append(
                f"| {systems.SYSTEMS[name].label} | "
                f"{'—' if server is None else f'{server:.2f}'} | "
                f"{'—' if pub is None else f'{pub:.2f}'} |"
            )
    if not rows:
        return []
    return [
        "| 1→1 flat-out | server CPU µs per delivered message | publisher CPU µs per "
        "message sent |",
        "|---|---|---|",
        *rows,
    ]


def checks_lines(session: Session) -> list[str]:
    checks = session.results.get("checks")
    if not checks:
        return []
    lines = [
        "| busd variant (raw publisher, 1→1 flat-out) | probe: schema / rate | delivered |"
        " busd CPU µs/msg |",
        "|---|---|---|---|",
    ]
    for label, v in checks["variants"].items():
        if "unproven" in v:
            lines.append(f"| {label} | NOT PROVEN, not measured: {v['unproven']} | — | — |")
            continue
        c = v["checks"]
        med = v.get("median", {})
        cost = med.get("server_cpu_us_per_msg")
        lines.append(
            f"| {label} | {'on' if c['schema_checks'] else 'off'} / "
            f"{'on' if c['rate_checks'] else 'off'} (proven) | {rate(med.get('delivered'))} | "
            f"{'—' if cost is None else f'{cost:.2f}'} |"
        )
    lines += [f"- {note}" for note in checks["notes"]]
    return lines


def memory_lines(session: Session) -> list[str]:
    m = session.results.get("memory")
    if not m or "rss_peak_kib" not in m:
        return []
    return [
        f"- {m['messages']:,} messages, 1 of 3 subscribers SIGSTOPped: busd RSS "
        f"{m['rss_idle_kib'] / 1024:.1f} MiB idle -> {m['rss_peak_kib'] / 1024:.1f} MiB peak "
        f"(growth {m['growth_kib'] / 1024:.1f} MiB); bound for this message size "
        f"{m['bound_this_message_kib'] / 1024:.0f} MiB: "
        f"{'held' if m['bound_held'] else 'EXCEEDED'}; documented worst-case bound "
        f"(max_message_bytes) {m['bound_documented_kib'] / 1024:.0f} MiB.",
        f"- the stalled subscriber got {m['stalled_received']:,} after it resumed; the two "
        f"others got {m['active']['delivered'] / 1000:.1f}k msg/s (baseline "
        f"{m['baseline']['delivered'] / 1000:.1f}k), lost {m['active']['lost']}: "
        f"{'unaffected' if m['others_unaffected'] else 'AFFECTED'}.",
    ]


def profile_lines(session: Session, top: int = 10) -> list[str]:
    p = session.results.get("profile")
    if not p or not p.get("samples"):
        return []
    lines = [
        f"busd hot functions under 1→1 flat-out ({p['samples']} py-spy samples, "
        f"% of busy samples; raw stacks in {p['file']}):",
        "",
        "| self % | function | | inclusive % | function |",
        "|---|---|---|---|---|",
    ]
    for (fs, ps), (fi, pi) in zip(p["self"][:top], p["inclusive"][:top], strict=False):
        lines.append(f"| {ps} | `{fs}` | | {pi} | `{fi}` |")
    threads = p.get("thread_cpu_us_per_msg")
    if threads:
        lines += [
            "",
            f"busd CPU µs per delivered message by thread over the profiled trial "
            f"({p['delivered']:,} delivered): "
            + ", ".join(f"{name} {us:.2f}" for name, us in threads.items())
            + f"; total {sum(threads.values()):.2f}",
        ]
    if p.get("self_lines"):
        lines += [
            "",
            "| self % | source line (C calls made there count as its own time) |",
            "|---|---|",
            *[f"| {pct} | `{where}` |" for where, pct in p["self_lines"][:top]],
        ]
    return lines


def _fig(v: float | None, fmt: str = ".1f") -> str:
    return "—" if v is None else format(v, fmt)


def _times(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def pool_lines(session: Session) -> list[str]:
    """The pool workload (bench.pool_clients): pool ÷ baseline, medians of the repeats."""
    p = session.results.get("pool")
    if not p or "median" not in p:
        return []
    m, r = p["median"], p["median"]["ratios"]
    pub = {k: m[k] for k in ("publish_plain_1", "publish_pool_1", "publish_pool_3")}
    fo = m["failover"]
    base, kill = fo["baseline"], fo["kill"]
    rate_s = f"{p['failover_rate']:,.0f}"
    return [
        f"pool clients ({p['brokers']} busd of their own, window {p['window']}, release v2; "
        "baseline and pool: medians of the repeats; ratio: median of pool ÷ baseline, each "
        "pair from the same repeat):",
        "",
        "| figure | baseline | pool | ratio |",
        "|---|---|---|---|",
        f"| publish flat out, settled msg/s: Publisher → 1 busd vs PoolPublisher → same busd"
        f" | {rate(pub['publish_plain_1']['rate'])} | {rate(pub['publish_pool_1']['rate'])} "
        f"| {_times(r['publish_pool_1'])} |",
        f"| ... vs PoolPublisher → 3 busd | {rate(pub['publish_plain_1']['rate'])} | "
        f"{rate(pub['publish_pool_3']['rate'])} | {_times(r['publish_pool_3'])} |",
        f"| publisher CPU µs/msg: Publisher vs PoolPublisher → 1 / → 3 busd | "
        f"{_fig(pub['publish_plain_1']['cpu_us'], '.2f')} | "
        f"{_fig(pub['publish_pool_1']['cpu_us'], '.2f')} / "
        f"{_fig(pub['publish_pool_3']['cpu_us'], '.2f')} | {_times(r['publish_cpu_pool_1'])}"
        f" / {_times(r['publish_cpu_pool_3'])} |",
        f"| end to end, delivered msg/s: Publisher → busd → Subscriber vs PoolPublisher → 3 "
        f"busd → PoolSubscriber | {rate(m['e2e_plain']['delivered'])} | "
        f"{rate(m['e2e_pool_3']['delivered'])} | {_times(r['e2e'])} |",
        f"| receive loop CPU µs/msg (its thread), same stream on 1 busd "
        f"({p['recv_rate']:,.0f} msg/s): "
        f"Subscriber vs PoolSubscriber (dedup) | {_fig(m['receive']['plain_us'], '.2f')} | "
        f"{_fig(m['receive']['pool_us'], '.2f')} | {_times(r['receive_cpu'])} |",
        f"| failover at {rate_s} msg/s, longest gap between deliveries, ms: no kill vs "
        f"kill -9 of 1 of 3 | {_fig(base['gap_ms'])} | {_fig(kill['gap_ms'])} | "
        f"{_times(r['failover_gap_ms'])} |",
        f"| ... p99 end-to-end latency, ms | {_fig(base['p99_ms'])} | {_fig(kill['p99_ms'])} "
        f"| {_times(r['failover_p99_ms'])} |",
        f"| ... max end-to-end latency, ms | {_fig(base['max_ms'])} | {_fig(kill['max_ms'])} "
        f"| {_times(r['failover_max_ms'])} |",
        "",
        f"- failover run (medians): resent {_fig(fo['resent'], '.0f')}, duplicates dropped "
        f"{_fig(fo['duplicates'], '.0f')}, lost {_fig(fo['lost'], '.0f')}, failed "
        f"{_fig(fo['failed'], '.0f')}; end to end lost: baseline "
        f"{_fig(m['e2e_plain']['lost'], '.0f')}, pool {_fig(m['e2e_pool_3']['lost'], '.0f')}",
        "- where each run's longest gap in the kill window began, ms from the kill (a pause "
        "the kill caused begins within a few ms after it): "
        + ", ".join(
            f"{r['kill']['gap_start_ms']:+.0f}"
            for r in p["runs"]["failover"]
            if r["kill"].get("gap_start_ms") is not None
        ),
        "- load average (1, 5, 15 min) at start / end: "
        f"{' '.join(f'{x:.1f}' for x in p['loadavg_start'])} / "
        f"{' '.join(f'{x:.1f}' for x in p.get('loadavg_end', ()))}",
    ]


def _us(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def batch_lines(session: Session) -> list[str]:
    """The batch sweep (bench.batches): by publisher max_batch, ratios from the same run."""
    b = session.results.get("batch")
    if not b or not b.get("runs"):
        return []
    sizes = [str(n) for n in b["sizes"]]
    nats = _median(session, "flat", "nats").get("delivered")
    head = " | ".join(f"max_batch {n}" for n in sizes)
    lines = [
        f"1→1 flat-out by publisher batch size (checks on; busd advertises batch="
        f"{b['advertised'] or 'none'}; client batching: {b['client_batching']}):",
        "",
        f"| publisher | figure | {head} |",
        "|---|---|" + "---|" * len(sizes),
    ]
    for name, by_size in b["median"].items():
        why = b["unavailable"].get(name, {})
        med = {n: by_size.get(n) or {} for n in sizes}
        base = med[sizes[0]].get("delivered")
        rows: list[tuple[str, Any]] = [
            ("delivered msg/s", lambda m: rate(m.get("delivered"))),
            (f"÷ max_batch {sizes[0]}", lambda m, base=base: _ratio(m.get("delivered"), base)),
            ("÷ NATS 1→1 (same run)", lambda m: _ratio(m.get("delivered"), nats)),
            ("busd CPU µs/msg", lambda m: _us(m.get("server_cpu_us_per_msg"))),
            ("publisher CPU µs/msg", lambda m: _us(m.get("publisher_cpu_us_per_msg"))),
            ("every publish answered, 0 loss", lambda m: _yes(m) if m else "—"),
        ]
        for i, (figure, get) in enumerate(rows):
            label = systems.SYSTEMS[name].label if i == 0 else ""
            cells = " | ".join("not run" if n in why else get(med[n]) for n in sizes)
            lines.append(f"| {label} | {figure} | {cells} |")
    for name, why in b["unavailable"].items():
        for n, text in why.items():
            lines.append(f"- {name}, max_batch {n}: not run: {text}")
    return lines


def _yes(m: dict[str, Any]) -> str:
    ok = m.get("every_publish_answered") and m.get("zero_loss_all_runs")
    return "yes" if ok else "NO"


def cores_lines(session: Session) -> list[str]:
    """The cores workload (bench.cores): two busd as a pool against one, same run."""
    c = session.results.get("cores")
    if not c or "median" not in c:
        return []
    from bench.cores import KINDS

    m, r = c["median"], c["median"]["ratios"]
    lines = [
        f"one busd against two as a pool on this host ({c['publishers']} publishers flat out, "
        "1 subscriber, checks on and proven on both; medians; ratio: median of two ÷ one "
        "from the same repeat):",
        "",
        "| clients | setup | delivered msg/s | busd CPU µs per delivered msg (all busd) | lost |",
        "|---|---|---|---|---|",
    ]
    for kind, title in KINDS.items():
        side = "busd_client" if kind.startswith("client") else "raw publishers"
        f = m[kind]
        lines.append(
            f"| {side} | {title} | {rate(f['delivered'])} | {_us(f['busd_cpu_us_per_msg'])} | "
            f"{_fig(f['lost'], '.0f')} |"
        )
        if kind.endswith("_2"):
            pre = kind.split("_")[0]
            lines.append(
                f"| | **two ÷ one** | {_times(r[f'{pre}_delivered'])} | "
                f"{_times(r[f'{pre}_busd_cpu_us_per_msg'])} | |"
            )
    lines.append(
        "- load average (1, 5, 15 min) at start / end: "
        f"{' '.join(f'{x:.1f}' for x in c['loadavg_start'])} / "
        f"{' '.join(f'{x:.1f}' for x in c.get('loadavg_end', ()))}"
    )
    return lines


def render(session: Session, meta: dict[str, Any]) -> str:
    parts = [
        f"busd benchmark, {meta['date']} — `{meta['command']}`",
        f"machine: {meta['machine']['nproc']} cores, {meta['machine']['cpu']}; "
        f"Python {meta['machine']['python']}, pyzmq {meta['machine']['pyzmq']} / libzmq "
        f"{meta['machine']['libzmq']}; medians of {session.settings.repeat} run(s); load "
        f"average at start {' '.join(f'{x:.1f}' for x in meta['machine'].get('loadavg', ()))}",
        "",
    ]
    parts += main_table(session)
    for section in (
        busd_lines(session),
        cpu_lines(session),
        batch_lines(session),
        checks_lines(session),
        memory_lines(session),
        pool_lines(session),
        cores_lines(session),
        ruby_publisher.lines(session),
        state.lines(session),
        profile_lines(session),
    ):
        if section:
            parts += ["", *section]
    if session.skipped:
        parts += ["", *[f"- skipped {n}: {why}" for n, why in session.skipped.items()]]
    if session.errors:
        parts += ["", *[f"- error: {e}" for e in session.errors]]
    return "\n".join(parts) + "\n"


def write_json(path: Path, session: Session, meta: dict[str, Any]) -> None:
    busd = session.pool.running.get("busd")
    doc = {
        "meta": meta,
        "settings": session.settings.as_dict(),
        "systems": session.systems,
        "skipped": session.skipped,
        "errors": session.errors,
        "busd_checks": busd.notes.get("checks") if busd is not None else None,
        "results": session.results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
