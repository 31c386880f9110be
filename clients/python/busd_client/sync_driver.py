"""The synchronous driver: a publisher doing all its I/O inside the caller's calls.

A ``SyncDriver`` has a ``PublishCore`` (composition, and the strategy that decides) and owns
its ``PublisherSockets`` for its whole life. It has no thread: replies, connection events
and deadlines are taken in by ``_pump`` (non-blocking) inside ``publish`` (every 32
messages, or when the window is full), ``Receipt.result``, ``flush`` and ``close``, and it
waits for the sockets with a zmq.Poller. ``Publisher`` and ``PoolPublisher`` are this driver
over the single-broker and the pool strategy.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import zmq

from busd_client.core import DEFAULT, CoreFacade, PublishCore, _Default, dispatch, submit
from busd_client.errors import BusError, ClosedError, PublishTimeout
from busd_client.ledger import Pending
from busd_client.sockets import PublisherSockets

__all__ = ["READ_EVERY", "SyncDriver", "SyncReceipt"]

_monotonic = time.monotonic
_time_ns = time.time_ns
# Replies are read without waiting every this many publishes (and whenever we wait anyway).
READ_EVERY = 32
_MAX_SLEEP = 1.0  # a waiting caller looks at its sockets at least this often


class SyncReceipt(Pending):
    """The fate of one message of a sync publisher. ``result()`` waits for it."""

    __slots__ = ("_owner",)
    _WAITING: ClassVar[str] = "no reply yet"  # what a result() past its timeout says

    _owner: SyncDriver[Any]  # set by publish

    def result(self, timeout: float | None = None) -> None:
        """Wait until the message is settled; raise its error (Rejected, PublishTimeout...).

        ``timeout`` None waits as long as the message can take; past a shorter ``timeout``
        it raises PublishTimeout and the message stays pending.
        """
        if not self._done:
            owner = self._owner
            owner._strategy.hurry()  # someone waits for it: a lingering batch goes now
            owner._wait_for(lambda: self._done, timeout, self._WAITING)
        if self._error is not None:
            self._reported = True
            raise self._error


R = TypeVar("R", bound=SyncReceipt)


class SyncDriver(CoreFacade[R]):
    """Publish from one thread (a zmq socket must not be shared between threads)."""

    def __init__(
        self,
        core: PublishCore,
        receipt: type[R],
        context: zmq.Context[Any] | None,
        reconnect_ivl: float,
        reconnect_ivl_max: float,
    ) -> None:
        super().__init__(core, receipt)
        self._poller = zmq.Poller()
        self._sockets = PublisherSockets(
            context if context is not None else zmq.Context.instance(),
            core.strategy,
            window=core.window,
            reconnect_ivl=reconnect_ivl,
            reconnect_ivl_max=reconnect_ivl_max,
            poller=self._poller,
        )
        self._send = self._sockets.send  # bound once: it is called for every message
        self._send_batch = self._sockets.send_batch

    def publish(
        self,
        topic: str,
        schema: str,
        version: int,
        data: Mapping[str, Any],
        *,
        id: str | None = None,
        retry_deadline: float | _Default | None = DEFAULT,
        wait_when_disabled: bool | _Default = DEFAULT,
    ) -> R:
        """Send one message (a pool: queue it for the pool); return its receipt without
        waiting for busd's reply.

        Waits while ``window`` messages are unsettled. Raises PublishTimeout (``sent``
        False) when that lasts past ``timeout``, or when a single broker's connection did not
        take the message within ``timeout`` (busd unreachable).
        """
        if self._closed:
            raise ClosedError("publisher is closed")
        core = self.core
        now = _monotonic()
        p = core.compose(
            self._receipt,
            topic,
            schema,
            version,
            data,
            id,
            retry_deadline,
            wait_when_disabled,
            now,
            _time_ns(),
        )
        p._owner = self
        self._since_read += 1
        if self._ledger.count >= self.window or self._since_read >= READ_EVERY:
            if not self._make_room():
                raise core.unsent(p, "the in-flight window stayed full")
            now = _monotonic()
        p._deadline = now + self.timeout
        submit(self._strategy, p, now, self._send, self._send_batch)
        if not p.attempts and self._strategy.send_in_publish and not core.linger:
            self._wait_for(lambda: p.attempts > 0 or p._done or p._held, None, None)
            if p._error is not None and not p.attempts:
                p._reported = True  # raised here, so flush does not list it again
                raise p._error
        return p

    def publish_many(
        self,
        messages: Iterable[Sequence[Any]],
        *,
        retry_deadline: float | _Default | None = DEFAULT,
        wait_when_disabled: bool | _Default = DEFAULT,
    ) -> list[R]:
        """Publish several messages given together; return their receipts, in order.

        Each item is ``(topic, schema, version, data)`` or ``(topic, schema, version, data,
        id)``. Every message is composed first (a payload msgpack cannot encode, or the
        local schemas refuse, raises before anything is sent); then they go out as batches
        of up to ``max_batch`` (docs/client.md "Batches"), each judged and answered on its
        own. Waits, and raises, like ``publish``: at the first message that cannot be
        published in time (the window stayed full, busd unreachable) it raises
        PublishTimeout(sent=False); the messages before it are published.
        """
        if self._closed:
            raise ClosedError("publisher is closed")
        core, now = self.core, _monotonic()
        ps = core.compose_many(
            self._receipt, messages, retry_deadline, wait_when_disabled, now, _time_ns
        )
        strategy, ledger, send, send_batch = (
            self._strategy,
            self._ledger,
            self._send,
            self._send_batch,
        )
        for p in ps:
            p._owner = self
            if ledger.count >= self.window:
                dispatch(strategy, now, send, send_batch)
                if not self._make_room():
                    raise core.unsent(p, "the in-flight window stayed full")
                now = _monotonic()
            p._deadline = now + self.timeout
            strategy.enqueue(p, now)
        self._since_read += len(ps)
        dispatch(strategy, now, send, send_batch)
        if strategy.send_in_publish and not core.linger:
            unsent = [p for p in ps if not (p.attempts or p._done or p._held)]
            if unsent:
                self._wait_for(
                    lambda: all(p.attempts or p._done or p._held for p in unsent), None, None
                )
            for p in unsent:
                if p._error is not None and not p.attempts:
                    p._reported = True  # raised here, so flush does not list it again
                    raise p._error
        return ps

    def publish_wait(
        self,
        topic: str,
        schema: str,
        version: int,
        data: Mapping[str, Any],
        *,
        id: str | None = None,
        retry_deadline: float | _Default | None = DEFAULT,
        wait_when_disabled: bool | _Default = DEFAULT,
    ) -> R:
        """publish() then wait until busd accepted it; raise the message's error if it failed."""
        p = self.publish(
            topic,
            schema,
            version,
            data,
            id=id,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
        )
        p.result()
        return p

    def flush(self, timeout: float | None = None) -> list[BusError]:
        """Wait until every message published so far is settled; return the failures.

        Returns (and forgets) the errors of all messages that failed since the previous
        flush, in the order they failed, except those ``result()`` already raised.
        ``timeout`` None waits as long as the messages can take; past a shorter ``timeout``
        raises PublishTimeout, the messages stay pending.
        """
        ledger = self._ledger
        self._strategy.hurry()  # what lingers to fill a batch goes now
        self._pump()
        if ledger.count:
            self._wait_for(lambda: ledger.count == 0, timeout, self._UNSETTLED)
        return ledger.take_failures()

    def close(self, timeout: float | None = None) -> list[BusError]:
        """Flush (up to ``timeout``; default the publisher's timeout, for a pool at most
        5 s), then close the sockets. Messages still pending fail with ClosedError; returns
        all failures not yet handed out."""
        if self._closed:
            return self._ledger.take_failures()
        with contextlib.suppress(PublishTimeout):
            self.flush(min(self.timeout, self._CLOSE_WAIT) if timeout is None else timeout)
        self._closed = True
        self._strategy.close()
        self._sockets.close()
        return self._ledger.take_failures()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Take in replies and events, apply deadlines, send what is due; never blocks."""
        if not self._closed:
            self._sockets.pump(_monotonic())

    def _make_room(self) -> bool:
        """Before a publish, every READ_EVERY messages and when the window is full: read
        what arrived; wait up to ``timeout`` for room in the window. False if it stayed
        full."""
        ledger = self._ledger
        self._since_read = 0
        self._pump()
        if ledger.count >= self.window:
            return self._wait_for(lambda: ledger.count < self.window, self.timeout, None)
        return True

    def _wait_for(self, cond: Callable[[], bool], timeout: float | None, what: str | None) -> bool:
        """Pump and poll until ``cond()``; False (or PublishTimeout, when ``what`` is given)
        past ``timeout``. With ``timeout`` None this ends when every message has settled.

        Error handling: nothing is retried here; the strategy decides every resend. Bad
        reply frames are counted by the strategy and ignored. A ZMQError (a socket or
        context closed under the publisher) or a bug propagates to the caller, with every
        message still pending where it was.
        """
        deadline = math.inf if timeout is None else _monotonic() + timeout
        ledger = self._ledger
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
            if (ledger.count == 0 and timeout is None) or self._closed:
                return cond()
            wake = self._strategy.next_wakeup(now)
            cap = _MAX_SLEEP if wake is None else min(_MAX_SLEEP, max(0.0, wake - now))
            self._sockets.watch()
            self._poller.poll(math.ceil(min(remaining, cap) * 1000))
