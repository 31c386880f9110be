"""asyncio publisher and subscriber, with the same semantics as the sync ones.

The publisher's socket is a zmq.asyncio socket used only to await readiness; sends and
reads go through a non-owning sync view of it (no future per frame). One pump task reads
replies, times messages out and sends retries while messages are pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
import zmq.backend

from busd_client._base import DEFAULT, PublisherBase, _Default
from busd_client.errors import BusError, ClosedError, PublishTimeout
from busd_client.inflight import Pending
from busd_client.latency import LatencyRecorder
from busd_client.sockets import (
    DEFAULT_PUB_ENDPOINT,
    DEFAULT_SUB_ENDPOINT,
    configure_dealer,
    configure_sub,
)
from busd_client.subscriber import Subscriptions
from busd_client.waiting import Book
from busd_protocol.messages import DecodeError, Message, decode_message
from busd_protocol.schemas import SchemaSet

__all__ = ["AsyncPublisher", "AsyncReceipt", "AsyncSubscriber", "AsyncWaiting", "Progress"]

_monotonic = time.monotonic
_RESEND_DELAY = 0.05
_READ_EVERY = 32


class Progress:
    """Wakes every coroutine waiting for some message to settle (window room, flush)."""

    __slots__ = ("_fut",)

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None

    def notify(self) -> None:
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait(self, deadline: float) -> bool:
        """Until some message settles (True); False once ``deadline`` has passed."""
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


class AsyncWaiting:
    """What the asyncio Publisher and PoolPublisher share: flush. The publisher provides its
    bookkeeping (``_book``), ``_pump`` (non-blocking I/O; notifies ``_progress``) and
    ``_ensure_pump`` (its pump task running)."""

    _book: Book
    _progress: Progress
    _UNSETTLED = "messages still in flight"  # what a flush past its timeout says

    if TYPE_CHECKING:  # provided by the publisher; not defined here, so never shadowed

        def _pump(self) -> None: ...

        def _ensure_pump(self) -> None: ...

    async def flush(self, timeout: float | None = None) -> list[BusError]:  # noqa: ASYNC109
        """Wait until every message is settled; return (and forget) the failures since the
        previous flush. Past ``timeout`` raise PublishTimeout; messages stay pending."""
        book = self._book
        deadline = math.inf if timeout is None else _monotonic() + timeout
        self._pump()
        while book.count:
            self._ensure_pump()
            if not await self._progress.wait(deadline) and self._pumped(lambda: book.count > 0):
                raise PublishTimeout(f"{self._UNSETTLED} after {timeout:g} s", sent=True)
        return book.take_failures()

    def _pumped(self, cond: Callable[[], bool]) -> bool:
        """``cond()`` after one more pump: at a deadline, what fell due at the same moment
        (an earlier message's own deadline, freeing the window) still counts."""
        self._pump()
        return cond()


class AsyncReceipt(Pending):
    """The fate of one published message: ``await receipt`` (or ``result()``) raises its error."""

    __slots__ = ()

    async def result(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait for the reply; past ``timeout`` raise PublishTimeout (message stays pending)."""
        if not self._done:
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
            except TimeoutError:
                raise PublishTimeout(f"no reply yet after {timeout:g} s", sent=True) from None
        if self._error is not None:
            self._reported = True
            raise self._error

    def __await__(self) -> Generator[Any, None, None]:
        return self.result().__await__()


class AsyncPublisher(AsyncWaiting, PublisherBase):
    """Publisher for asyncio code; see Publisher for the parameters and semantics."""

    def __init__(
        self,
        endpoint: str = DEFAULT_PUB_ENDPOINT,
        *,
        name: str = "python",
        window: int = 1000,
        timeout: float = 5.0,
        retry_deadline: float | None = None,
        wait_when_disabled: bool = False,
        context: zmq.asyncio.Context | None = None,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 1.0,
        schemas: SchemaSet | str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            name=name,
            window=window,
            timeout=timeout,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
            schemas=schemas,
        )
        ctx = context if context is not None else zmq.asyncio.Context.instance()
        self._asock: zmq.asyncio.Socket = ctx.socket(zmq.DEALER)
        self._sock: zmq.Socket[bytes] = zmq.Socket.shadow(self._asock.underlying)
        configure_dealer(self._sock, window, reconnect_ivl, reconnect_ivl_max)
        self._sock.connect(endpoint)
        self._pump_task: asyncio.Task[None] | None = None
        self._work = asyncio.Event()  # set when there is something to pump for
        self._progress = Progress()  # wakes callers when a message settles
        self._since_read = 0

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
    ) -> AsyncReceipt:
        """Send one message; return its receipt without waiting for the reply.

        Raises PublishTimeout (``sent`` False) when it could not be sent within ``timeout``.
        """
        if self._closed:
            raise ClosedError("publisher is closed")
        r = self._compose(
            AsyncReceipt, topic, schema, version, data, id, retry_deadline, wait_when_disabled
        )
        inflight = self._inflight
        deadline = _monotonic() + self.timeout
        self._since_read += 1
        if self._since_read >= _READ_EVERY:
            self._since_read = 0
            self._pump()
        while inflight.count >= self.window:
            self._ensure_pump()
            if not await self._progress.wait(deadline):
                raise self._unsent(r, "the in-flight window stayed full")
        while not self._send(r):
            remaining = deadline - _monotonic()
            if remaining <= 0 or self._closed:
                raise self._unsent(r, "no connection to busd accepted the message")
            self._ensure_pump()
            await self._asock.poll(  # type: ignore[call-arg]
                math.ceil(min(remaining, 0.25) * 1000), zmq.POLLOUT
            )
        self._ensure_pump()
        return r

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
    ) -> AsyncReceipt:
        """publish() then await the reply; raise the message's error if it failed."""
        r = await self.publish(
            topic,
            schema,
            version,
            data,
            id=id,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
        )
        await r.result()
        return r

    async def close(self, timeout: float | None = None) -> list[BusError]:  # noqa: ASYNC109
        """Flush (up to ``timeout``, default the publisher's timeout), then close.

        Messages still pending fail with ClosedError; returns the failures not yet flushed.
        """
        if self._closed:
            return self._inflight.take_failures()
        with contextlib.suppress(PublishTimeout):
            await self.flush(self.timeout if timeout is None else timeout)
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        self._inflight.close()
        self._progress.notify()
        self._asock.close(linger=0)
        return self._inflight.take_failures()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- internals ------------------------------------------------------------------------

    def _pump(self) -> None:
        sock = self._sock
        inflight = self._inflight
        before = inflight.settled
        now = _monotonic()
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            inflight.on_reply(frame, now)
        inflight.expire(now)
        for p in inflight.due_retries(now):
            if not self._send(p):
                inflight.retry_later(p, now, _RESEND_DELAY)
        if inflight.settled != before:
            self._progress.notify()

    def _ensure_pump(self) -> None:
        self._work.set()
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._run_pump())

    async def _run_pump(self) -> None:
        inflight = self._inflight
        try:
            while not self._closed:
                self._pump()
                if inflight.count == 0:
                    self._work.clear()
                    await self._work.wait()
                    continue
                wake = inflight.next_wakeup()
                wait = 1.0 if wake is None else min(1.0, max(0.0, wake - _monotonic()))
                await self._asock.poll(math.ceil(wait * 1000))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave callers waiting for ever
            self._closed = True
            inflight.close()
            self._progress.notify()
            raise BusError(f"publisher pump failed: {exc!r}") from exc


class AsyncSubscriber(Subscriptions):
    """Subscriber for asyncio code: ``async for message in sub`` or ``await sub.recv()``."""

    def __init__(
        self,
        endpoint: str = DEFAULT_SUB_ENDPOINT,
        prefixes: str | bytes | Iterable[str | bytes] = (),
        *,
        rcvhwm: int = 10_000,
        context: zmq.asyncio.Context | None = None,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 1.0,
    ) -> None:
        ctx = context if context is not None else zmq.asyncio.Context.instance()
        self.endpoint = endpoint
        self.bad_messages = 0
        self.latency = LatencyRecorder()  # receive time - publisher's ts, every message
        self._sock: zmq.asyncio.Socket = ctx.socket(zmq.SUB)
        configure_sub(
            zmq.Socket.shadow(self._sock.underlying), rcvhwm, reconnect_ivl, reconnect_ivl_max
        )
        self._sock.connect(endpoint)
        self.subscribe(prefixes)

    async def recv(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        """The next message, or None when ``timeout`` seconds pass first (None: no limit)."""
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            if deadline is not None:
                remaining = deadline - _monotonic()
                events = await self._sock.poll(max(0, math.ceil(remaining * 1000)))
                if not events:
                    return None
            frames = await self._sock.recv_multipart()
            if len(frames) == 2:
                try:
                    message = decode_message(frames[0], frames[1])
                except DecodeError:
                    pass
                else:
                    self.latency.observe_ns(time.time_ns() - message.ts)
                    return message
            self.bad_messages += 1

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            message = await self.recv()
            if message is not None:
                yield message

    def close(self) -> None:
        self._sock.close(linger=0)

    async def __aenter__(self) -> AsyncSubscriber:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
