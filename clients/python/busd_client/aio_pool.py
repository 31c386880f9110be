"""asyncio clients for a pool of brokers, with the same semantics as pool.py's.

AsyncPoolPublisher shares with PoolPublisher the sockets and the non-blocking pump
(pool.PoolShell) and every decision (pool_core.PoolCore); only the waiting differs. One pump
task per publisher awaits readiness on all DEALER and monitor sockets, feeds replies and
connection events to the core, and sleeps until the core's next wakeup. AsyncPoolSubscriber
is an AsyncSubscriber connected to every broker, dropping copies through dedup.DedupWindow.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import zmq
import zmq.asyncio

from busd_client._base import DEFAULT, _Default
from busd_client.aio import AsyncReceipt, AsyncSubscriber, AsyncWaiting, Progress
from busd_client.dedup import DedupWindow
from busd_client.errors import BusError, ClosedError, PublishTimeout
from busd_client.pool import PoolMembership, PoolShell, pool_endpoints
from busd_client.pool_core import PoolPending
from busd_protocol.messages import Message
from busd_protocol.schemas import SchemaSet

__all__ = ["AsyncPoolPublisher", "AsyncPoolReceipt", "AsyncPoolSubscriber"]

_monotonic = time.monotonic
_READ_EVERY = 32
_MAX_SLEEP = 1.0  # the pump looks at the sockets at least this often, even when idle


class AsyncPoolReceipt(PoolPending, AsyncReceipt):
    """The fate of one message published to a pool: ``await receipt`` (or ``await
    receipt.result(timeout)``) raises its error; ``broker`` names who accepted it."""

    __slots__ = ()


class AsyncPoolPublisher(AsyncWaiting, PoolShell):
    """PoolPublisher for asyncio code; see PoolPublisher for the parameters and semantics.

    ``timeout`` None: a message waits for ever for some broker to accept it. ``await
    publish(...)`` returns once the message is queued for the pool, waiting (up to
    ``timeout``) while ``window`` messages are unsettled.
    """

    _UNSETTLED = "messages still unsettled"

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        name: str = "python",
        window: int = 1000,
        timeout: float | None = 30.0,
        attempt_timeout: float = 1.0,
        retry_deadline: float | None = None,
        wait_when_disabled: bool = False,
        context: zmq.asyncio.Context | None = None,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 1.0,
        schemas: SchemaSet | str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            endpoints,
            name=name,
            window=window,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
            schemas=schemas,
        )
        self._open(
            context if context is not None else zmq.asyncio.Context.instance(),
            window,
            reconnect_ivl,
            reconnect_ivl_max,
        )
        self._poller = zmq.asyncio.Poller()
        for sock in self._owned:
            self._poller.register(sock, zmq.POLLIN)
        self._pump_task: asyncio.Task[None] | None = None
        # The pump's current sleep (a poll future): cancelled to wake the pump early.
        self._sleep: asyncio.Future[Any] | None = None
        self._progress = Progress()  # wakes callers when a message settles

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
    ) -> AsyncPoolReceipt:
        """Queue one message for the pool; return its receipt without waiting for a broker.

        Waits while ``window`` messages are unsettled; raises PublishTimeout (``sent``
        False) if that lasts past ``timeout``.
        """
        if self._closed:
            raise ClosedError("publisher is closed")
        r = self._compose(
            AsyncPoolReceipt, topic, schema, version, data, id, retry_deadline, wait_when_disabled
        )
        core = self.core
        self._since_read += 1
        if core.count >= self.window or self._since_read >= _READ_EVERY:
            self._since_read = 0
            self._pump()
            deadline = _monotonic() + self.timeout
            while core.count >= self.window and not self._closed:
                self._ensure_pump()
                if not await self._progress.wait(deadline) and not self._pumped(
                    lambda: core.count < self.window
                ):
                    raise self._unsent(r, "the in-flight window stayed full")
            if self._closed:
                raise ClosedError("publisher closed while the message waited for the window")
        now = _monotonic()
        r._deadline = now + self.timeout
        idle = core.count == 0
        core.add(r, now, self._send_to)
        # The pump sleeps until the core's next wakeup as it was: a first message brings an
        # earlier one (its deadlines), and so may the first one left waiting (an avoidance).
        self._ensure_pump(wake=idle or (r._link is None and len(core.waiting) == 1))
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
    ) -> AsyncPoolReceipt:
        """publish() then await acceptance by a broker; raise the error if it failed."""
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
        """Flush (up to ``timeout``, default min(timeout, 5 s)), fail the rest with
        ClosedError, close the sockets; return the failures not yet flushed."""
        if self._closed:
            return self.core.take_failures()
        wait = min(self.timeout, 5.0) if timeout is None else timeout
        with contextlib.suppress(PublishTimeout):
            await self.flush(wait)
        await self._shut()
        return self.core.take_failures()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- internals ------------------------------------------------------------------------

    async def _shut(self) -> None:
        self._closed = True
        task, self._pump_task = self._pump_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.core.close()
        self._progress.notify()
        self._close_sockets()

    def _pump(self) -> None:
        if self._closed:
            return
        before = self.core.settled
        super()._pump()
        if self.core.settled != before:
            self._progress.notify()

    def _ensure_pump(self, wake: bool = False) -> None:
        if wake and self._sleep is not None:
            self._sleep.cancel()
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._run_pump())

    async def _run_pump(self) -> None:
        core = self.core
        task = asyncio.current_task()
        assert task is not None
        try:
            while not self._closed:
                self._pump()
                now = _monotonic()
                wake = core.next_wakeup(now)
                sleep = _MAX_SLEEP if wake is None else min(_MAX_SLEEP, max(0.0, wake - now))
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
            raise BusError(f"pool publisher pump failed: {exc!r}") from exc


class AsyncPoolSubscriber(PoolMembership, AsyncSubscriber):
    """Subscribe to every broker of a pool and deliver each message once (asyncio).

    See PoolSubscriber: copies of a message (same ``id``) within the dedup window are
    dropped and counted in ``duplicates``. ``async for message in sub`` or ``await
    sub.recv(timeout)``.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        prefixes: str | bytes | Iterable[str | bytes] = (),
        *,
        dedup_size: int = 200_000,
        dedup_ttl: float = 60.0,
        rcvhwm: int = 10_000,
        context: zmq.asyncio.Context | None = None,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 1.0,
    ) -> None:
        endpoints = pool_endpoints(endpoints)
        self.dedup = DedupWindow(dedup_size, dedup_ttl)
        super().__init__(
            endpoints[0],
            prefixes,
            rcvhwm=rcvhwm,
            context=context,
            reconnect_ivl=reconnect_ivl,
            reconnect_ivl_max=reconnect_ivl_max,
        )
        self._join(endpoints)

    async def recv(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        """The next message not seen before, or None when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - _monotonic())
            message = await super().recv(remaining)
            if message is None or self.dedup.first(message.id, _monotonic()):
                return message

    async def __aenter__(self) -> Self:
        return self
