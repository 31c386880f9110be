"""The asyncio driver: a publisher for asyncio code, with the sync driver's semantics.

An ``AsyncDriver`` has a ``PublishCore`` (composition, and the strategy that decides) and
owns its ``PublisherSockets`` for its whole life: asyncio sockets, used only to await
readiness, with all sends and reads going through sync views of them (no future per
frame). One pump task per publisher awaits readiness on all of them, takes in replies and
connection events, applies deadlines, sends what is due and sleeps until the strategy's
next wakeup. Callers wait on ``Progress`` (some message settled or went out) or on their
receipt's future. ``AsyncPublisher`` and ``AsyncPoolPublisher`` are this driver over the
single-broker and the pool strategy.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import zmq
import zmq.asyncio

from busd_client.core import DEFAULT, CoreFacade, PublishCore, _Default, submit
from busd_client.errors import BusError, ClosedError, PublishTimeout
from busd_client.ledger import Pending
from busd_client.sockets import PublisherSockets
from busd_client.sync_driver import READ_EVERY

__all__ = ["AsyncDriver", "AsyncReceipt", "Progress"]

_monotonic = time.monotonic
_time_ns = time.time_ns
_MAX_SLEEP = 1.0  # the pump looks at the sockets at least this often, even when idle


class Progress:
    """Wakes every coroutine waiting for some message to settle or go out (window room,
    flush, a publish waiting for its connection)."""

    __slots__ = ("_fut",)

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None

    def notify(self) -> None:
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait(self, deadline: float) -> bool:
        """Until the next notify (True); False once ``deadline`` has passed."""
        remaining = deadline - _monotonic()
        if remaining <= 0:
            return False
        if self._fut is None:
            self._fut = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(
                asyncio.shield(self._fut), None if math.isinf(remaining) else remaining
            )
        except TimeoutError:
            return False
        return True


class AsyncReceipt(Pending):
    """The fate of one published message: ``await receipt`` (or ``result()``) raises its error."""

    __slots__ = ("_owner",)
    _WAITING: ClassVar[str] = "no reply yet"  # what a result() past its timeout says

    _owner: AsyncDriver[Any] | None  # set by publish

    async def result(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until it is settled; past ``timeout`` raise PublishTimeout (it stays pending)."""
        if not self._done:
            owner = getattr(self, "_owner", None)
            if owner is not None:
                owner._hurry()  # someone waits for it: a lingering batch goes now
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
            except TimeoutError:
                raise PublishTimeout(f"{self._WAITING} after {timeout:g} s", sent=True) from None
        if self._error is not None:
            self._reported = True
            raise self._error

    def __await__(self) -> Generator[Any, None, None]:
        return self.result().__await__()


R = TypeVar("R", bound=AsyncReceipt)


class AsyncDriver(CoreFacade[R]):
    """Publish from asyncio code; see SyncDriver for the semantics of every call."""

    def __init__(
        self,
        core: PublishCore,
        receipt: type[R],
        context: zmq.asyncio.Context | None,
        reconnect_ivl: float,
        reconnect_ivl_max: float,
    ) -> None:
        super().__init__(core, receipt)
        self._poller = zmq.asyncio.Poller()
        self._sockets = PublisherSockets(
            context if context is not None else zmq.asyncio.Context.instance(),
            core.strategy,
            window=core.window,
            reconnect_ivl=reconnect_ivl,
            reconnect_ivl_max=reconnect_ivl_max,
            poller=self._poller,
        )
        self._send = self._sockets.send  # bound once: it is called for every message
        self._send_batch = self._sockets.send_batch
        self._pump_task: asyncio.Task[None] | None = None
        # The pump's current sleep (a poll future): cancelled to wake the pump early.
        self._sleep: asyncio.Future[Any] | None = None
        self._progress = Progress()
        self._room_waiters = 0  # publishes waiting for room in the window now

    async def publish(
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
        waiting for the reply. Raises PublishTimeout (``sent`` False) when the window stayed
        full for ``timeout``, or a single broker's connection did not take it in that time.
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
        ledger = self._ledger
        strategy = self._strategy
        self._since_read += 1
        if ledger.count >= self.window or self._since_read >= READ_EVERY:
            self._since_read = 0
            self._pump()
            if ledger.count >= self.window:
                self._room_waiters += 1
                try:
                    await self._room(p)
                finally:
                    self._room_waiters -= 1
                if self._room_waiters:
                    # Others wait for the window too, woken by the same replies: this one
                    # queues, and the last of them (or the pump, woken now) sends the
                    # queue as one batch.
                    now = _monotonic()
                    p._deadline = now + self.timeout
                    strategy.enqueue(p, now)
                    self._ensure_pump(wake=True)
                    return await self._handed_over(p)
            now = _monotonic()
        p._deadline = now + self.timeout
        idle = ledger.count == 0
        queued = len(strategy.waiting)
        submit(strategy, p, now, self._send, self._send_batch)
        if queued and p.attempts:
            self._progress.notify()  # it went out with those queued before it
        # The pump sleeps until the strategy's next wakeup as it was: a first message brings
        # an earlier one (its deadlines), and so may the first one left waiting.
        if idle or (not p.attempts and (p._held or len(strategy.waiting) == 1)):
            self._ensure_pump(wake=True)
        elif self._pump_task is None:
            self._ensure_pump()
        if not p.attempts and strategy.send_in_publish and not self.core.linger:
            return await self._handed_over(p)
        return p

    async def _handed_over(self, p: R) -> R:
        """``p`` once the strategy sent it (or held it, or it failed); a failure before any
        send is raised (a single broker: its connection did not take it in time)."""
        if self._strategy.send_in_publish and not self.core.linger:
            while not p.attempts and not p._done and not p._held:
                await self._progress.wait(math.inf)
            if p._error is not None and not p.attempts:
                p._reported = True  # raised here, so flush does not list it again
                raise p._error
        return p

    async def publish_many(
        self,
        messages: Iterable[Sequence[Any]],
        *,
        retry_deadline: float | _Default | None = DEFAULT,
        wait_when_disabled: bool | _Default = DEFAULT,
    ) -> list[R]:
        """Publish several messages given together; see SyncDriver.publish_many."""
        if self._closed:
            raise ClosedError("publisher is closed")
        now = _monotonic()
        ps = self.core.compose_many(
            self._receipt, messages, retry_deadline, wait_when_disabled, now, _time_ns
        )
        strategy, ledger = self._strategy, self._ledger
        for p in ps:
            p._owner = self
            if ledger.count >= self.window:
                self._pump()
                if ledger.count >= self.window:
                    await self._room(p)
                now = _monotonic()
            p._deadline = now + self.timeout
            strategy.enqueue(p, now)
        self._pump()
        self._ensure_pump(wake=True)
        for p in ps:
            await self._handed_over(p)
        return ps

    async def publish_wait(
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
        """publish() then await its settlement; raise the message's error if it failed."""
        p = await self.publish(
            topic,
            schema,
            version,
            data,
            id=id,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
        )
        await p.result()
        return p

    async def flush(self, timeout: float | None = None) -> list[BusError]:  # noqa: ASYNC109
        """Wait until every message is settled; return (and forget) the failures since the
        previous flush. Past ``timeout`` raise PublishTimeout; messages stay pending."""
        ledger = self._ledger
        deadline = math.inf if timeout is None else _monotonic() + timeout
        self._strategy.hurry()  # what lingers to fill a batch goes now
        self._pump()
        while ledger.count and not self._closed:
            self._ensure_pump()
            if not await self._progress.wait(deadline) and self._pumped(lambda: ledger.count > 0):
                raise PublishTimeout(f"{self._UNSETTLED} after {timeout:g} s", sent=True)
        return ledger.take_failures()

    async def close(self, timeout: float | None = None) -> list[BusError]:  # noqa: ASYNC109
        """Flush (up to ``timeout``; default the publisher's timeout, for a pool at most
        5 s), then close. Messages still pending fail with ClosedError; returns the
        failures not yet handed out."""
        if self._closed:
            return self._ledger.take_failures()
        with contextlib.suppress(PublishTimeout):
            await self.flush(min(self.timeout, self._CLOSE_WAIT) if timeout is None else timeout)
        await self._shut()
        return self._ledger.take_failures()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- internals ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Take in replies and events, apply deadlines, send what is due; never blocks.
        Wakes the waiting callers when a message settled or went out."""
        if self._closed:
            return
        ledger = self._ledger
        before = ledger.settled
        if self._sockets.pump(_monotonic()) or ledger.settled != before:
            self._progress.notify()

    def _hurry(self) -> None:
        """A caller waits for a message: what lingers to fill a batch goes now."""
        self._strategy.hurry()
        if self.core.linger and self._strategy.waiting:
            self._ensure_pump(wake=True)

    def _pumped(self, cond: Callable[[], bool]) -> bool:
        """``cond()`` after one more pump: at a deadline, what fell due at the same moment
        (an earlier message's own deadline, freeing the window) still counts."""
        self._pump()
        return cond()

    async def _room(self, p: Pending) -> None:
        """Wait up to ``timeout`` for room in the window for ``p``."""
        ledger = self._ledger
        deadline = _monotonic() + self.timeout
        while ledger.count >= self.window and not self._closed:
            self._ensure_pump()
            if not await self._progress.wait(deadline) and not self._pumped(
                lambda: ledger.count < self.window
            ):
                raise self.core.unsent(p, "the in-flight window stayed full")
        if self._closed:
            raise ClosedError("publisher closed while the message waited for the window")

    def _ensure_pump(self, wake: bool = False) -> None:
        if wake and self._sleep is not None:
            self._sleep.cancel()
        task = self._pump_task
        if task is None or task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._run_pump())

    async def _run_pump(self) -> None:
        """The pump task: pump, then sleep until a socket has input (or, for a single
        broker whose socket would not take a message, output) or the strategy's next
        wakeup, at most ``_MAX_SLEEP``; ``_ensure_pump(wake=True)`` ends a sleep early.

        Error handling: nothing is retried here; the strategy decides every resend. Bad
        reply frames are counted by the strategy and ignored. Any other exception (a
        ZMQError, a bug) must not leave callers waiting for ever: the publisher is shut
        (every pending message fails with ClosedError, waiters are woken, sockets closed)
        and the task ends with a BusError naming the cause.
        """
        task = asyncio.current_task()
        assert task is not None
        strategy = self._strategy
        try:
            while not self._closed:
                self._pump()
                now = _monotonic()
                wake = strategy.next_wakeup(now)
                sleep = _MAX_SLEEP if wake is None else min(_MAX_SLEEP, max(0.0, wake - now))
                self._sockets.watch()
                self._sleep = asyncio.ensure_future(self._poller.poll(math.ceil(sleep * 1000)))
                try:
                    await self._sleep
                except asyncio.CancelledError:
                    if task.cancelling():
                        raise  # the task itself is cancelled (close)
                    # else only the sleep was, by _ensure_pump: look again at once
                finally:
                    self._sleep = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave callers waiting for ever
            await self._shut()
            raise BusError(f"publisher pump failed: {exc!r}") from exc

    async def _shut(self) -> None:
        self._closed = True
        task, self._pump_task = self._pump_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._strategy.close()
        self._progress.notify()
        self._sockets.close()
