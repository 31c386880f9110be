"""Client-side rate limits read from a directory of rate files, as busd reads its own.

One file per key, named by the key, in the grammar of ``busd_protocol.rates``
(docs/rates.md). ``0`` disables the key; a missing file means no limit; a file that does not
parse, is out of range or cannot be read keeps the last good value. Files are re-read at
most once per second per key (monotonic clock). The burst defaults to ``max(1, RATE)``.

    limiter = RateLimiter("/etc/rates")
    with limiter.limit("publish"):
        publisher.publish(...)

A directory that does not exist means every key is unlimited, which is what a typo in its
path looks like too: the limiter logs a warning (logger ``busd_client.limiter``) when it is
made for one, and again when a directory that was there goes missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from busd_client.errors import Disabled, RateLimited
from busd_protocol.rates import MAX_FILE_BYTES, Limit, TokenBucket, check_file_name, parse_rate

__all__ = ["RateLimiter"]

log = logging.getLogger("busd_client.limiter")


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
        self._missing = False  # the directory was missing when last looked at
        self._check_directory()

    def _check_directory(self) -> None:
        """Warn, once per disappearance, that a missing directory leaves everything
        unlimited (a wrong path is otherwise silent)."""
        missing = not self.directory.is_dir()
        if missing and not self._missing:
            log.warning(
                "rates directory %s does not exist: every key is unlimited until it does",
                self.directory,
            )
        self._missing = missing

    def limit_for(self, key: str) -> Limit | None:
        """The limit in force for ``key`` (None: unlimited), re-reading its file if due."""
        with self._lock:
            return self._state(key, self._clock()).limit

    def _state(self, key: str, now: float) -> _Key:
        st = self._keys.get(key)
        if st is None:
            problem = check_file_name(key)
            if problem is not None:
                raise ValueError(f"rate key {key!r}: {problem}")
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
            self._check_directory()
            return
        except OSError:
            return  # unreadable for now (permissions, a directory...): keep the last good
        self._missing = False  # a file was read: the directory is there
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
