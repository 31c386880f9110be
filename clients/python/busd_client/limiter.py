"""Client-side rate limits read from a directory of rate files, as busd reads its own.

One file per key, named by the key, holding ``RATE`` or ``RATE BURST`` (messages per second,
ASCII decimals: ``^[0-9]+(\\.[0-9]+)?([ \\t]+[0-9]+(\\.[0-9]+)?)?[ \\t]*\\n?$`` and nothing
else). ``0`` disables the key; a missing file means no limit; a file that does not parse, is
out of range or cannot be read keeps the last good value. Files are re-read at most once per
second per key (monotonic clock). The burst defaults to ``max(1, RATE)``.

    limiter = RateLimiter("/etc/rates")
    with limiter.limit("publish"):
        publisher.publish(...)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from busd_client.errors import Disabled, RateLimited

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_RATE",
    "RATE_GRAMMAR",
    "EmptyRateFile",
    "Limit",
    "RateFileError",
    "RateLimiter",
    "TokenBucket",
    "parse_rate",
    "read_rate",
]

MAX_RATE = 1e9  # as busd: anything above is a typo, not a limit
MAX_FILE_BYTES = 256  # a valid rate line is far shorter; a big file is not a rate file
# The rate-file format is defined here once (grammar, limits, reasons); busd's rates
# directory reader uses ``read_rate`` too, so the two can never disagree.
RATE_GRAMMAR = re.compile(rb"[0-9]+(?:\.[0-9]+)?(?:[ \t]+[0-9]+(?:\.[0-9]+)?)?[ \t]*\n?")
_KEY = re.compile(r"[^\x00-\x20\x7f/]{1,255}")


@dataclass(frozen=True, slots=True)
class Limit:
    """``rate`` tokens per second into a bucket of ``burst``; ``rate == 0`` disables."""

    rate: float
    burst: float


class RateFileError(ValueError):
    """A rate file's content is not ``RATE`` or ``RATE BURST``; the message says why."""

    kind = "content"


class EmptyRateFile(RateFileError):
    """No content yet: ``echo`` truncates before it writes."""

    kind = "empty"


def read_rate(content: bytes) -> Limit:
    """The limit a rate file's bytes say; raises ``RateFileError`` saying what is wrong.

    ``fullmatch`` rather than ``$``: in Python ``$`` also matches before a final newline,
    which would let ``"5\\n\\n"`` through.
    """
    if not content:
        raise EmptyRateFile("empty file (not yet written?)")
    if len(content) > MAX_FILE_BYTES:
        raise RateFileError(f"over {MAX_FILE_BYTES} bytes")
    if RATE_GRAMMAR.fullmatch(content) is None:
        raise RateFileError(
            f"expected 'RATE' or 'RATE BURST' as decimal numbers, got {content[:40]!r}"
        )
    parts = content.split()
    rate = float(parts[0])
    burst = float(parts[1]) if len(parts) > 1 else max(1.0, rate)
    if not rate <= MAX_RATE:
        raise RateFileError(f"rate must be a number from 0 to {MAX_RATE:.0f}")
    if not 1.0 <= burst <= MAX_RATE:
        raise RateFileError(f"burst must be a number from 1 to {MAX_RATE:.0f}")
    return Limit(rate, burst)


def parse_rate(content: bytes) -> Limit | None:
    """The limit a rate file's bytes say, or None when they are not a valid rate file."""
    try:
        return read_rate(content)
    except RateFileError:
        return None


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; a new bucket starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, limit: Limit, now: float) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = limit.burst if limit.rate > 0 else 0.0
        self.stamp = now

    def reconfigure(self, limit: Limit, now: float) -> None:
        self._refill(now)
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = min(self.tokens, limit.burst) if limit.rate > 0 else 0.0

    def _refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now

    def take(self, now: float) -> float:
        """Take a token and return 0.0, or return the seconds until one is there.

        Requires ``rate > 0``.
        """
        self._refill(now)
        if self.tokens >= 1.0 - 1e-9:  # float refills may sum to 0.9999999999
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate


class _Key:
    __slots__ = ("bucket", "limit", "read_at")

    def __init__(self) -> None:
        self.limit: Limit | None = None  # None: no limit
        self.read_at = -math.inf
        self.bucket: TokenBucket | None = None


class RateLimiter:
    """Token buckets whose limits come from rate files in ``directory``. Thread-safe."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        reread_interval: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._sleep = sleep
        self._reread = reread_interval
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()

    def limit_for(self, key: str) -> Limit | None:
        """The limit in force for ``key`` (None: unlimited), re-reading its file if due."""
        with self._lock:
            return self._state(key, self._clock()).limit

    def _state(self, key: str, now: float) -> _Key:
        st = self._keys.get(key)
        if st is None:
            if _KEY.fullmatch(key) is None or key.startswith("."):
                raise ValueError(f"rate key {key!r}: not a file name in the rates directory")
            st = self._keys[key] = _Key()
        if now - st.read_at >= self._reread:
            st.read_at = now
            self._reload(key, st, now)
        return st

    def _reload(self, key: str, st: _Key, now: float) -> None:
        try:
            with open(self.directory / key, "rb") as f:
                content = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            st.limit = None
            st.bucket = None
            return
        except OSError:
            return  # unreadable for now (permissions, a directory...): keep the last good
        limit = parse_rate(content)
        if limit is None or limit == st.limit:
            return  # a bad or half-written file keeps the last good value
        st.limit = limit
        if st.bucket is None:
            st.bucket = TokenBucket(limit, now)
        else:
            st.bucket.reconfigure(limit, now)

    def _try(self, key: str) -> tuple[float, Limit | None, float]:
        """Take a token: (0, ..) on success, else (seconds to wait, limit, now)."""
        with self._lock:
            now = self._clock()
            st = self._state(key, now)
            limit = st.limit
            if limit is None:
                return 0.0, None, now
            if limit.rate == 0 or st.bucket is None:
                # Disabled: look again when the file is next re-read.
                return max(1e-3, st.read_at + self._reread - now), limit, now
            return st.bucket.take(now), limit, now

    def try_acquire(self, key: str) -> bool:
        """Take a token for ``key`` if there is one now; never waits."""
        return self._try(key)[0] == 0.0

    def _next_wait(self, key: str, deadline: float | None) -> float:
        """0 when a token was taken, else how long to sleep; raises when waiting is futile."""
        wait, limit, now = self._try(key)
        if wait == 0.0:
            return 0.0
        assert limit is not None
        if limit.rate == 0:
            if deadline is None or now >= deadline:
                raise Disabled(key, f"the rate file for {key!r} says 0: publishing is stopped")
            return min(wait, deadline - now)
        if deadline is not None and now + wait > deadline:
            raise RateLimited(
                key, math.ceil(wait * 1000), f"no token for {key!r} within the timeout"
            )
        return wait

    def acquire(self, key: str, timeout: float | None = None) -> None:
        """Take a token for ``key``, sleeping until there is one.

        ``timeout`` None: wait as long as the rate needs, but raise Disabled at once when the
        key is disabled. With a ``timeout`` (seconds): raise RateLimited as soon as no token
        can come within it, and while the key is disabled keep re-reading its file until the
        timeout, then raise Disabled.
        """
        deadline = None if timeout is None else self._clock() + timeout
        while (wait := self._next_wait(key, deadline)) > 0:
            self._sleep(wait)

    async def acquire_async(self, key: str, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """``acquire`` for asyncio: waits with ``asyncio.sleep``."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            wait = self._next_wait(key, deadline)
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    @contextlib.contextmanager
    def limit(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """``with limiter.limit("publish"): ...`` runs the body once a token was taken."""
        self.acquire(key, timeout)
        yield

    @contextlib.asynccontextmanager
    async def limit_async(self, key: str, timeout: float | None = None) -> AsyncIterator[None]:  # noqa: ASYNC109
        """``async with limiter.limit_async("publish"): ...``"""
        await self.acquire_async(key, timeout)
        yield
