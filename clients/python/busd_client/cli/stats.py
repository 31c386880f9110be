"""busdctl stats [--json]: busd's figures from its metrics endpoint, and the scrape parsing and
frame rendering that ``busdctl top`` (cli/top.py), ``status`` and ``pool`` share.

They read busd's Prometheus endpoint (``--metrics HOST:PORT``, else found as cli/locate.py
says) over plain HTTP: it is the one interface that carries every counter, works with the
control socket locked down to busd's own user, and needs nothing beyond the standard
library. ``stats`` prints totals since busd started.

Exit status: 0 done, 2 a configuration file that cannot be read, 3 busd's metrics endpoint
could not be reached or read (or busd serves none).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from busd_client.cli import locate
from busd_client.cli.common import add_json, add_metrics, fail
from busd_client.cli.exits import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE

__all__ = [
    "Summary",
    "metrics_address",
    "parse_exposition",
    "read_summary",
    "readyz",
    "reason",
    "register",
    "render_frame",
    "scrape",
]
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_CLEAR = "\x1b[H\x1b[2J"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_exposition(text: str) -> Samples:
    """Prometheus text format -> metric name -> [(labels, value)]; comments skipped."""
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line.strip())
        if match is None:
            continue
        labels = {
            k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for k, v in _LABEL.findall(match.group(2) or "")
        }
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        out.setdefault(match.group(1), []).append((labels, value))
    return out


def scrape(address: str, timeout: float = 5.0) -> Samples:
    """GET http://ADDRESS/metrics; raises OSError (including URLError) when it fails."""
    url = f"http://{address}/metrics"
    if not url.startswith("http://"):
        raise OSError(f"bad address {address!r}")
    # No proxy: the metrics port is usually loopback, and a proxy would hide which busd answers.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return parse_exposition(resp.read().decode("utf-8", errors="replace"))


def readyz(address: str, timeout: float) -> tuple[int, str]:
    """(status, first line of the body) of GET http://ADDRESS/readyz; OSError if no answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}/readyz", timeout=timeout) as resp:
            return int(resp.status), resp.read(512).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:  # 503 while starting, draining or warming up
        with exc:
            return exc.code, exc.read(512).decode("utf-8", "replace").strip()


@dataclass
class Summary:
    """The figures busdctl shows, from one scrape."""

    at: float  # monotonic time of the scrape
    version: str = "?"
    ready: bool = False
    draining: bool = False
    started: float = 0.0  # process start, Unix seconds
    received: float = 0.0
    accepted: float = 0.0
    bytes_in: float = 0.0
    bytes_accepted: float = 0.0
    replies_dropped: float = 0.0
    publishers: float = 0.0
    subscribers: float = 0.0
    subscriptions: float = 0.0
    rejected: dict[str, float] = field(default_factory=dict)
    throttled: dict[str, float] = field(default_factory=dict)
    latency: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative)
    assertions: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: Samples, at: float) -> Summary:
        def one(name: str) -> float:
            values = samples.get(name) or [({}, 0.0)]
            return values[0][1]

        def by(name: str, label: str) -> dict[str, float]:
            return {labels.get(label, ""): v for labels, v in samples.get(name, [])}

        info = (samples.get("busd_build_info") or [({}, 0.0)])[0][0]
        buckets = sorted(
            (float(labels["le"]), v)
            for labels, v in samples.get("busd_processing_latency_seconds_bucket", [])
            if "le" in labels
        )
        throttled = by("busd_rate_key_throttled_total", "key")
        for key, n in by("busd_rate_key_disabled_total", "key").items():
            throttled[key] = throttled.get(key, 0.0) + n
        return cls(
            at=at,
            version=info.get("version", "?"),
            ready=one("busd_ready") == 1.0,
            draining=one("busd_draining") == 1.0,
            started=one("process_start_time_seconds"),
            received=one("busd_messages_received_total"),
            accepted=one("busd_messages_accepted_total"),
            bytes_in=one("busd_received_bytes_total"),
            bytes_accepted=one("busd_accepted_bytes_total"),
            replies_dropped=one("busd_replies_dropped_total"),
            publishers=one("busd_publishers_connected"),
            subscribers=one("busd_subscribers_connected"),
            subscriptions=one("busd_active_subscriptions"),
            rejected=by("busd_messages_rejected_total", "code"),
            throttled=throttled,
            latency=buckets,
            assertions={k: v == 1.0 for k, v in by("busd_assertion_ok", "name").items()},
        )

    def as_dict(self) -> dict[str, Any]:
        """Counts as ints, for `busdctl stats --json`."""
        return {
            "version": self.version,
            "ready": self.ready,
            "draining": self.draining,
            "received": int(self.received),
            "accepted": int(self.accepted),
            "rejected": {k: int(v) for k, v in sorted(self.rejected.items()) if v},
            "throttled": {k: int(v) for k, v in sorted(self.throttled.items())},
            "bytes_in": int(self.bytes_in),
            "bytes_accepted": int(self.bytes_accepted),
            "replies_dropped": int(self.replies_dropped),
            "publishers_connected": int(self.publishers),
            "subscribers_connected": int(self.subscribers),
            "subscriptions": int(self.subscriptions),
            "latency_ms": {
                "p50": quantile_ms(self.latency, 0.5),
                "p99": quantile_ms(self.latency, 0.99),
            },
            "assertions": self.assertions,
        }


def quantile_ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound (ms) of the bucket holding quantile ``q``; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for bound, cumulative in buckets:
        if cumulative >= q * total:
            return bound * 1000.0
    return None


def _delta_buckets(
    now: list[tuple[float, float]], then: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    if [b for b, _ in now] != [b for b, _ in then]:
        return now
    return [(b, c - c0) for (b, c), (_, c0) in zip(now, then, strict=True)]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"<={value:g} ms"


def _bytes(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value:.0f} B"
        value /= 1000
    return f"{value:.1f} GB"


def render_frame(
    now: Summary, then: Summary | None, address: str, wall: float | None = None
) -> str:
    """One screen of `busdctl top`: rates over ``then`` -> ``now`` (totals without ``then``)."""
    span = now.at - then.at if then is not None else 0.0
    base = then or Summary(at=now.at)

    def rate(cur: float, old: float) -> str:
        return f"{(cur - old) / span:10.1f}" if span > 0 else f"{'-':>10}"

    def byte_rate(cur: float, old: float) -> str:
        return f"{_bytes((cur - old) / span):>10}" if span > 0 else f"{'-':>10}"

    wall = time.time() if wall is None else wall
    up = max(0, int(wall - now.started)) if now.started else 0
    state = "draining" if now.draining else ("ready" if now.ready else "NOT READY")
    window = _delta_buckets(now.latency, base.latency)
    rejected_now, rejected_then = sum(now.rejected.values()), sum(base.rejected.values())
    lines = [
        f"busd {now.version} at {address}   {state}   up {up // 3600:d}:{up // 60 % 60:02d}:"
        f"{up % 60:02d}   " + (f"interval {span:.1f}s" if span > 0 else "totals since start"),
        "",
    ]
    if span > 0:
        lines += [
            f"{'messages/s':14}{'in':>6} {rate(now.received, base.received)}"
            f"   {'out':>4} {rate(now.accepted, base.accepted)}"
            f"   {'rejected':>8} {rate(rejected_now, rejected_then)}",
            f"{'bytes/s':14}{'in':>6} {byte_rate(now.bytes_in, base.bytes_in)}"
            f"   {'out':>4} {byte_rate(now.bytes_accepted, base.bytes_accepted)}",
        ]
    lines += [
        f"{'totals':14}{'in':>6} {now.received:10.0f}   {'out':>4} {now.accepted:10.0f}"
        f"   {'rejected':>8} {rejected_now:10.0f}",
        f"{'latency':14}{'p50':>6} {_ms(quantile_ms(window, 0.5)):>10}"
        f"   {'p99':>4} {_ms(quantile_ms(window, 0.99)):>10}"
        f"   (since start: p99 {_ms(quantile_ms(now.latency, 0.99))})",
        f"{'connections':14}{'pubs':>6} {now.publishers:10.0f}   {'subs':>4} "
        f"{now.subscribers:10.0f}   {'subscriptions':>8} {now.subscriptions:.0f}",
        "",
        f"{'rejects by code':24}{'per s':>10}{'total':>12}",
    ]
    codes = sorted(c for c, n in now.rejected.items() if n)
    lines += [
        f"  {c:22}{rate(now.rejected[c], base.rejected.get(c, 0.0))}{now.rejected[c]:12.0f}"
        for c in codes
    ] or ["  (none)"]
    lines += ["", f"{'throttles by rate key':24}{'per s':>10}{'total':>12}"]
    lines += [
        f"  {k:22}{rate(n, base.throttled.get(k, 0.0))}{n:12.0f}"
        for k, n in sorted(now.throttled.items())
        if n
    ] or ["  (none)"]
    if now.assertions:
        lines += ["", "assertions"]
        lines += [
            f"  {name:22}{'ok' if ok else 'VIOLATED'}"
            for name, ok in sorted(now.assertions.items())
        ]
    return "\n".join(lines) + "\n"


def register(subparsers: Any) -> None:
    stats = subparsers.add_parser(
        "stats",
        help="print busd's counters since start",
        description="Print busd's counters since it started, read from its metrics endpoint.",
    )
    add_metrics(stats)
    add_json(stats)
    stats.set_defaults(func=run_stats)


def metrics_address(args: argparse.Namespace) -> locate.Found | int:
    """The metrics endpoint to read (cli/locate.py), or the exit status after saying why
    there is none to read."""
    try:
        found = locate.metrics(args)
    except locate.LocateError as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)
    if found.value == "off":
        return fail(
            args,
            "unavailable",
            f'busd serves no metrics endpoint (metrics = "off" in {found.source})',
            EXIT_UNREACHABLE,
        )
    return found


def read_summary(found: locate.Found, timeout: float = 5.0) -> Summary:
    """One scrape as a Summary; OSError (with a readable message) when it fails."""
    try:
        return Summary.of(scrape(found.value, timeout), time.monotonic())
    except OSError as exc:
        where = found.value if found.source.startswith("--") else found.where()
        raise OSError(f"cannot read metrics from {where}: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    """What went wrong, for people: "Connection refused", not a repr."""
    why = getattr(exc, "reason", None) or exc
    return str(getattr(why, "strerror", None) or why)


def run_stats(args: argparse.Namespace) -> int:
    found = metrics_address(args)
    if isinstance(found, int):
        return found
    try:
        summary = read_summary(found)
    except OSError as exc:
        return fail(args, "unavailable", str(exc), EXIT_UNREACHABLE)
    if args.json:
        print(json.dumps(summary.as_dict(), separators=(",", ":")))
    else:
        sys.stdout.write(render_frame(summary, None, found.value))
    return EXIT_OK
