"""End-to-end latency as a subscriber sees it: receive time minus the publisher's ``ts``.

Both are wall-clock nanoseconds (``time.time_ns``), so the figure is exact on one host and as
good as the hosts' clock sync across hosts. Buckets are powers of two of microseconds
(1 µs, 2 µs, 4 µs … ~1.2 h): observing is one ``bit_length`` and one list increment, cheap
enough for every message. Export the snapshot into your own metrics as you like.
"""

from __future__ import annotations

from dataclasses import dataclass

_BUCKETS = 33  # 2**32 µs is about 71 minutes; anything later lands in the last bucket


@dataclass(frozen=True, slots=True)
class LatencySnapshot:
    count: int
    negative: int  # messages stamped in the future (clock skew): not in the buckets
    counts: tuple[int, ...]  # counts[i]: latency <= 2**i µs (and > 2**(i-1) µs)

    def quantile(self, q: float) -> float | None:
        """Upper bound in seconds of the bucket holding quantile ``q``; None when empty."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return (1 << i) / 1e6
        return (1 << (_BUCKETS - 1)) / 1e6


class LatencyRecorder:
    """Counts latencies into power-of-two buckets; one per subscriber object."""

    __slots__ = ("_counts", "_negative")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self._negative = 0

    def observe_ns(self, latency_ns: int) -> None:
        if latency_ns < 0:
            self._negative += 1
            return
        micros = (latency_ns + 999) // 1000
        index = (micros - 1).bit_length() if micros > 1 else 0
        self._counts[min(index, _BUCKETS - 1)] += 1

    def snapshot(self) -> LatencySnapshot:
        counts = tuple(self._counts)
        return LatencySnapshot(sum(counts), self._negative, counts)
