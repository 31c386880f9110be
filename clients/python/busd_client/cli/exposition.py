"""busd's metrics endpoint as busdctl reads it: the Prometheus text format (``parse_exposition``),
``scrape`` and ``readyz`` over plain HTTP (standard library only, no proxy), histograms as
(le, cumulative) buckets and their quantiles, and the units busdctl prints.

``busdctl stats``, ``top``, ``status`` and ``pool`` share these (cli/stats.py builds its
``Summary`` from one scrape). Every failure to reach or read the endpoint is an ``OSError``;
``reason`` says it for people.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

__all__ = [
    "Samples",
    "delta_buckets",
    "fmt_bytes",
    "fmt_ms",
    "histogram",
    "parse_exposition",
    "quantile_ms",
    "readyz",
    "reason",
    "scrape",
]

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

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


def histogram(samples: Samples, name: str) -> list[tuple[float, float]]:
    """A histogram's ``NAME_bucket`` samples as sorted (le, cumulative count)."""
    found = samples.get(name + "_bucket", [])
    return sorted((float(labels["le"]), v) for labels, v in found if "le" in labels)


def quantile_ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound (ms) of the bucket holding quantile ``q``; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for bound, cumulative in buckets:
        if cumulative >= q * total:
            return bound * 1000.0
    return None


def delta_buckets(
    now: list[tuple[float, float]], then: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """What a histogram counted between two scrapes (``now`` whole if its buckets changed)."""
    if [b for b, _ in now] != [b for b, _ in then]:
        return now
    return [(b, c - c0) for (b, c), (_, c0) in zip(now, then, strict=True)]


def fmt_ms(value: float | None) -> str:
    """A quantile's bound for people: "<=5 ms", "-" without observations."""
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"<={value:g} ms"


def fmt_bytes(value: float) -> str:
    """Bytes for people, in powers of 1000: "12.3 kB"."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value:.0f} B"
        value /= 1000
    return f"{value:.1f} GB"


def reason(exc: BaseException) -> str:
    """What went wrong, for people: "Connection refused", not a repr."""
    why = getattr(exc, "reason", None) or exc
    return str(getattr(why, "strerror", None) or why)
