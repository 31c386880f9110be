"""Waiting in the caller's thread: what the sync Publisher and PoolPublisher share.

A sync publisher does all its I/O inside the caller's calls. Its subclass provides the
bookkeeping (``_book``: InFlight or PoolCore), ``_pump`` (read replies and events, time
messages out, send what is due; never blocks), ``_next_wakeup`` (when the bookkeeping next has
timer work) and ``_poll`` (sleep until a socket may have work); this mixin waits with them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from busd_client.errors import BusError, PublishTimeout

__all__ = ["READ_EVERY", "SyncWaiting"]

_monotonic = time.monotonic
# Replies are read without waiting every this many publishes (and whenever we wait anyway).
READ_EVERY = 32
_MAX_SLEEP = 1.0  # a waiting caller looks at its sockets at least this often


class Book(Protocol):
    """The bookkeeping a publisher waits on."""

    count: int  # messages whose fate is not known yet
    bad_replies: int  # reply frames that broke the protocol

    def take_failures(self) -> list[BusError]: ...


class SyncWaiting:
    _book: Book
    timeout: float
    window: int
    _since_read: int
    _UNSETTLED = "messages still in flight"  # what a flush past its timeout says

    if TYPE_CHECKING:  # provided by the publisher; not defined here, so never shadowed

        def _pump(self) -> None: ...

        def _next_wakeup(self, now: float) -> float | None: ...

        def _poll(self, timeout_ms: int) -> None: ...

    def flush(self, timeout: float | None = None) -> list[BusError]:
        """Wait until every message published so far is settled; return the failures.

        Returns (and forgets) the errors of all messages that failed since the previous
        flush, in the order they failed. ``timeout`` None waits as long as the messages can
        take; past a shorter ``timeout`` raises PublishTimeout, the messages stay pending.
        """
        book = self._book
        self._pump()
        if book.count:
            self._wait_for(lambda: book.count == 0, timeout, self._UNSETTLED)
        return book.take_failures()

    def _make_room(self) -> bool:
        """Before a publish: now and then (and when the window is full) read what arrived;
        wait up to ``timeout`` for room in the window. False if it stayed full."""
        book = self._book
        self._since_read += 1
        if book.count >= self.window or self._since_read >= READ_EVERY:
            self._since_read = 0
            self._pump()
            if book.count >= self.window:
                return self._wait_for(lambda: book.count < self.window, self.timeout, None)
        return True

    def _wait_for(self, cond: Callable[[], bool], timeout: float | None, what: str | None) -> bool:
        """Pump until ``cond()``; False (or PublishTimeout, when ``what`` is given) past
        ``timeout``. With ``timeout`` None this ends when every message has settled."""
        deadline = math.inf if timeout is None else _monotonic() + timeout
        while True:
            self._pump()
            if cond():
                return True
            now = _monotonic()
            remaining = deadline - now
            if remaining <= 0:
                if what is None:
                    return False
                raise PublishTimeout(f"{what} after {timeout:g} s", sent=True)
            if self._book.count == 0 and timeout is None:
                return cond()
            wake = self._next_wakeup(now)
            cap = _MAX_SLEEP if wake is None else min(_MAX_SLEEP, max(0.0, wake - now))
            self._poll(math.ceil(min(remaining, cap) * 1000))
