"""Publish rate limits: token buckets, one per configured rate key.

A message passes every bucket that applies to it:

- ``publish``: all traffic;
- ``publish.<prefix>``: the configured key with the longest prefix of the topic
  (``publish.release`` covers ``release``, ``release.shop``, ``releases``);
- ``publisher.<name>``: the envelope's ``publisher``.

Time is the ``now`` argument (monotonic seconds); nothing here reads a clock, so a wall-clock
jump cannot change a decision. A limit is ``(rate, burst)``: ``rate`` tokens per second refill
a bucket holding at most ``burst`` tokens; a message takes one token. ``rate == 0`` disables
the key. A bucket with a new key starts full.

Admission is atomic: every applicable bucket is refilled and checked first, and a token is
taken from each only when all of them hold one. A refused message costs no tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from busd_protocol.codes import Code, Reject
from busd_protocol.rates import (
    GLOBAL_KEY,
    NO_LIMITS,
    ONE_TOKEN,
    PREFIX_KEY,
    PUBLISHER_KEY,
    Limit,
    Limits,
    TokenBucket,
    freeze,
)

RECENT_WINDOW = 60.0  # seconds covered (approximately) by the "recent" counters
_TOPIC_CACHE_MAX = 16384


class _Counters:
    """Refusals of one key; survive reconfiguration so totals never go backwards."""

    __slots__ = ("disabled_total", "throttled_total", "window", "window_start")

    def __init__(self) -> None:
        self.throttled_total = 0
        self.disabled_total = 0
        # Sliding-window estimate of recent refusals from two fixed windows:
        # [throttled in current, disabled in current, throttled in previous, disabled in previous]
        self.window = [0, 0, 0, 0]
        self.window_start: float | None = None

    def _roll(self, now: float) -> float:
        """Advance the windows to ``now``; returns the current window's start."""
        start = self.window_start
        if start is None:
            self.window_start = now
            return now
        elapsed = now - start
        if elapsed < RECENT_WINDOW:
            return start
        w = self.window
        if elapsed < 2 * RECENT_WINDOW:
            w[2], w[3] = w[0], w[1]
            start += RECENT_WINDOW
        else:
            w[2] = w[3] = 0
            start = now
        w[0] = w[1] = 0
        self.window_start = start
        return start

    def throttled(self, now: float) -> None:
        self.throttled_total += 1
        self._roll(now)
        self.window[0] += 1

    def disabled(self, now: float) -> None:
        self.disabled_total += 1
        self._roll(now)
        self.window[1] += 1

    def recent(self, now: float) -> tuple[int, int]:
        """Approximate (throttled, disabled) over the last ``RECENT_WINDOW`` seconds."""
        start = self._roll(now)
        w = self.window
        weight = max(0.0, 1.0 - (now - start) / RECENT_WINDOW)
        return round(w[0] + w[2] * weight), round(w[1] + w[3] * weight)


class _Bucket(TokenBucket):
    """A configured key's token bucket and its refusal counters."""

    __slots__ = ("counters", "key")

    def __init__(self, key: str, limit: Limit, counters: _Counters, tokens: float, stamp: float):
        super().__init__(limit, stamp, tokens)
        self.key = key
        self.counters = counters

    def retry_after_ms(self) -> int:
        return max(1, math.ceil(self.wait() * 1000.0))


@dataclass(frozen=True, slots=True)
class BucketRow:
    """One line of ``RateTable.snapshot``."""

    key: str
    rate: float
    burst: float
    tokens: float
    throttled_recent: int
    throttled_total: int
    disabled_recent: int
    disabled_total: int


@dataclass(frozen=True, slots=True)
class RateTableStatistics:
    """``RateTable.statistics()``: refusals over all keys since start, and keys configured."""

    throttled_total: int  # rate_limited answers
    disabled_total: int  # disabled answers
    keys: int


class RateTable:
    """The ``RateCheck`` of ``busd.kernel.admission``: owned by the task that admits messages.

    ``configure`` installs a new limits value between messages. ``admit`` costs one attribute
    test when no limit is configured.
    """

    __slots__ = (
        "_any",
        "_counters",
        "_global",
        "_lengths",
        "_limits",
        "_prefixes",
        "_publishers",
        "_topic_cache",
        "disabled",
        "throttled",
    )

    def __init__(self, limits: Mapping[str, Limit] = NO_LIMITS, now: float = 0.0):
        self._limits: Limits = NO_LIMITS
        self._any = False
        self._global: _Bucket | None = None
        self._prefixes: dict[str, _Bucket] = {}
        self._lengths: tuple[int, ...] = ()
        self._publishers: dict[str, _Bucket] = {}
        self._topic_cache: dict[str, _Bucket | None] = {}
        self._counters: dict[str, _Counters] = {}
        self.throttled = 0  # rate_limited answers
        self.disabled = 0  # disabled answers
        if limits:
            self.configure(limits, now)

    @property
    def limits(self) -> Limits:
        return self._limits

    def configure(self, limits: Mapping[str, Limit], now: float) -> None:
        """Swap in ``limits``. A key whose limit is unchanged keeps its bucket and tokens; a
        changed key keeps its tokens (capped at the new burst) unless it was disabled, in
        which case it starts full like a new key."""
        frozen = freeze(limits)
        old = {b.key: b for b in self._buckets()}
        buckets: dict[str, _Bucket] = {}
        for key, limit in frozen.items():
            prev = old.get(key)
            if prev is not None and prev.rate == limit.rate and prev.burst == limit.burst:
                buckets[key] = prev
                continue
            counters = self._counters.setdefault(key, _Counters())
            tokens = limit.burst
            if prev is not None and prev.rate > 0:
                tokens = min(prev.refill(now), limit.burst)
            buckets[key] = _Bucket(key, limit, counters, tokens, now)
        self._limits = frozen
        self._global = buckets.get(GLOBAL_KEY)
        self._prefixes = {
            k[len(PREFIX_KEY) :]: b for k, b in buckets.items() if k.startswith(PREFIX_KEY)
        }
        self._lengths = tuple(sorted({len(p) for p in self._prefixes}, reverse=True))
        self._publishers = {
            k[len(PUBLISHER_KEY) :]: b for k, b in buckets.items() if k.startswith(PUBLISHER_KEY)
        }
        self._topic_cache = {}
        self._any = bool(buckets)

    def _buckets(self) -> list[_Bucket]:
        found = [] if self._global is None else [self._global]
        return found + list(self._prefixes.values()) + list(self._publishers.values())

    def _prefix_bucket(self, topic: str) -> _Bucket | None:
        cache = self._topic_cache
        try:
            return cache[topic]
        except KeyError:
            pass
        found = None
        prefixes = self._prefixes
        size = len(topic)
        for length in self._lengths:  # longest first; at most one dict probe per length
            if length <= size:
                found = prefixes.get(topic[:length])
                if found is not None:
                    break
        if len(cache) >= _TOPIC_CACHE_MAX:
            cache.clear()  # bounded memory; topics repeat, so the cache refills at once
        cache[topic] = found
        return found

    def admit(self, topic: str, publisher: str, now: float) -> Reject | None:
        if not self._any:
            return None
        g = self._global
        p = self._prefix_bucket(topic) if self._prefixes else None
        u = self._publishers.get(publisher) if self._publishers else None
        short = False
        for b in (g, p, u):  # refill inline: this runs for every message
            if b is None:
                continue
            elapsed = now - b.stamp
            if elapsed > 0:  # a monotonic clock never goes back; if it did, refill nothing
                tokens = b.tokens + elapsed * b.rate
                b.tokens = tokens if tokens < b.burst else b.burst
                b.stamp = now
            if b.tokens < ONE_TOKEN:
                short = True
        if short:
            return self._refuse((g, p, u), now)
        # Every bucket holds a token: only now take them (atomic admission).
        if g is not None:
            g.tokens -= 1.0
        if p is not None:
            p.tokens -= 1.0
        if u is not None:
            u.tokens -= 1.0
        return None

    def count_fenced(self, key: str, now: float) -> None:
        """A message refused by an order fence (kernel/fences.py) behind an earlier refusal
        by ``key``: counted as that key's refusal, as if its bucket had refused it."""
        counters = self._counters.get(key)
        if counters is not None:
            counters.throttled(now)
        self.throttled += 1

    def _refuse(self, applicable: tuple[_Bucket | None, ...], now: float) -> Reject:
        present = [b for b in applicable if b is not None]
        for bucket in present:
            if bucket.rate == 0:  # not retryable: say so even when another bucket is empty
                bucket.counters.disabled(now)
                self.disabled += 1
                return Reject(
                    Code.DISABLED,
                    f"publishing is disabled by rate key {bucket.key}",
                    {"key": bucket.key},
                )
        # Every empty bucket must refill before a retry can pass: name the slowest.
        empty = max((b for b in present if b.tokens < ONE_TOKEN), key=_Bucket.retry_after_ms)
        empty.counters.throttled(now)
        self.throttled += 1
        wait = empty.retry_after_ms()
        return Reject(
            Code.RATE_LIMITED,
            f"rate limit {empty.key} exceeded ({empty.rate:g}/s, burst "
            f"{empty.burst:g}); retry after {wait} ms",
            {"key": empty.key, "retry_after_ms": wait},
        )

    def snapshot(self, now: float) -> tuple[BucketRow, ...]:
        """The configured keys, sorted, with tokens refilled to ``now``."""
        rows = []
        for bucket in sorted(self._buckets(), key=lambda b: b.key):
            tokens = bucket.refill(now)
            throttled, disabled = bucket.counters.recent(now)
            rows.append(
                BucketRow(
                    bucket.key,
                    bucket.rate,
                    bucket.burst,
                    tokens,
                    throttled,
                    bucket.counters.throttled_total,
                    disabled,
                    bucket.counters.disabled_total,
                )
            )
        return tuple(rows)

    def statistics(self) -> RateTableStatistics:
        return RateTableStatistics(self.throttled, self.disabled, len(self._limits))
