"""A fixed-bucket histogram of plain ints: cheap to observe on the hot path, exported later."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

# Seconds; from 10 µs to 10 s, roughly 1-2.5-5 steps. Upper bounds, inclusive.
LATENCY_BUCKETS: tuple[float, ...] = (
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket, not cumulative; last is +Inf
    total: int
    sum: float

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (0..1); 0.0 when empty."""
        if self.total == 0:
            return 0.0
        rank = q * self.total
        seen = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            seen += count
            if seen >= rank:
                return bound
        return float("inf")

    def minus(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        """Observations since ``earlier`` (for windows)."""
        return HistogramSnapshot(
            self.bounds,
            tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True)),
            self.total - earlier.total,
            self.sum - earlier.sum,
        )


class Histogram:
    __slots__ = ("_bounds", "_counts", "_sum", "_total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS):
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0
        self._sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self._counts[bisect_left(self._bounds, value)] += count
        self._total += count
        self._sum += value * count

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._total, self._sum)
