"""asyncio publisher and subscriber, with the same semantics as the sync ones.

AsyncPublisher is the asyncio driver (aio_driver.py) over the single-broker strategy.
AsyncSubscriber is a SUB socket awaited through zmq.asyncio.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType

import zmq
import zmq.asyncio
import zmq.backend

from busd_client.aio_driver import AsyncDriver, AsyncReceipt
from busd_client.core import DEFAULT_MAX_BATCH
from busd_client.gaps import Gap, GapTracker
from busd_client.latency import LatencyRecorder
from busd_client.single_broker import single_broker_core
from busd_client.sockets import DEFAULT_PUB_ENDPOINT, DEFAULT_SUB_ENDPOINT, configure_sub
from busd_client.subscriber import Subscriber, Subscriptions
from busd_protocol.messages import Message
from busd_protocol.schemas import SchemaSet

__all__ = ["AsyncPublisher", "AsyncSubscriber"]

_monotonic = time.monotonic
_recv_frame = zmq.backend.Socket.recv
_zmq_poll = zmq.backend.zmq_poll
_NOBLOCK = zmq.NOBLOCK
_Again = zmq.Again


class AsyncPublisher(AsyncDriver[AsyncReceipt]):
    """Publisher for asyncio code; see Publisher for the parameters and semantics.

    ``await publish(...)`` returns an AsyncReceipt once the message is on its way;
    ``await receipt`` raises its error. A pump task reads replies while messages are
    pending.
    """

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
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        core = single_broker_core(
            endpoint,
            timeout,
            name=name,
            window=window,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
            schemas=schemas,
            max_batch=max_batch,
            linger=linger,
        )
        super().__init__(core, AsyncReceipt, context, reconnect_ivl, reconnect_ivl_max)


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
        on_gap: Callable[[Gap], None] | None = None,
    ) -> None:
        ctx = context if context is not None else zmq.asyncio.Context.instance()
        self.endpoint = endpoint
        self.bad_messages = 0
        self.tracker = GapTracker(1, on_gap)
        self.latency = LatencyRecorder()  # receive time - publisher's ts, every message
        self._sock: zmq.asyncio.Socket = ctx.socket(zmq.SUB)
        # Frames are read through a sync view without a future per message; the asyncio
        # socket is only awaited when nothing is queued.
        self._view: zmq.Socket[bytes] = zmq.Socket.shadow(self._sock.underlying)
        self._poll_list = [(self._view, zmq.POLLIN)]
        configure_sub(self._view, rcvhwm, reconnect_ivl, reconnect_ivl_max)
        self._sock.connect(endpoint)
        self.subscribe(prefixes)

    async def recv(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        """The next message, or None when ``timeout`` seconds pass first (None: no limit).

        Error handling: a message that does not decode (docs/protocol.md §3) is counted in
        ``bad_messages`` and skipped; nothing else is caught (a ZMQError, e.g. the socket
        closed, reaches the caller).
        """
        deadline = None if timeout is None else _monotonic() + timeout
        view = self._view
        poll_list = self._poll_list
        while True:
            # What is queued is read at once; the socket is awaited only when nothing is
            # (a zmq_poll, not a non-blocking recv: its zmq.Again costs ~3 µs).
            if not _zmq_poll(poll_list, 0):
                if deadline is None:
                    await self._sock.poll()
                else:
                    remaining = deadline - _monotonic()
                    events = await self._sock.poll(max(0, math.ceil(remaining * 1000)))
                    if not events:
                        return None
                continue
            try:
                first = _recv_frame(view, _NOBLOCK, False)
            except _Again:
                continue
            message = self._frames(Subscriber._rest(view, first))
            if message is not None:
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
