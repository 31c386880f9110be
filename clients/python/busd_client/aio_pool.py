"""asyncio clients for a pool of brokers, with the same semantics as pool.py's.

AsyncPoolPublisher is the asyncio driver (aio_driver.py) over the pool strategy
(pool_strategy.py), which PoolPublisher shares: only the waiting differs. Its pump task
awaits readiness on every DEALER and monitor socket. AsyncPoolSubscriber is an
AsyncSubscriber connected to every broker, dropping copies through dedup.DedupWindow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

import zmq
import zmq.asyncio

from busd_client.aio import AsyncSubscriber
from busd_client.aio_driver import AsyncDriver, AsyncReceipt
from busd_client.core import DEFAULT_MAX_BATCH
from busd_client.dedup import DedupWindow
from busd_client.gaps import Gap
from busd_client.pool import PoolMembership
from busd_client.pool_strategy import pool_core, pool_endpoints
from busd_protocol.messages import Message
from busd_protocol.schemas import SchemaSet

__all__ = ["AsyncPoolPublisher", "AsyncPoolReceipt", "AsyncPoolSubscriber"]

_monotonic = time.monotonic


class AsyncPoolReceipt(AsyncReceipt):
    """The fate of one message published to a pool: ``await receipt`` (or ``await
    receipt.result(timeout)``) raises its error; ``broker`` names who accepted it."""

    __slots__ = ()


class AsyncPoolPublisher(AsyncDriver[AsyncPoolReceipt]):
    """PoolPublisher for asyncio code; see PoolPublisher for the parameters and semantics.

    ``timeout`` None: a message waits for ever for some broker to accept it. ``await
    publish(...)`` returns once the message is queued for the pool, waiting (up to
    ``timeout``) while ``window`` messages are unsettled.
    """

    _UNSETTLED = "messages still unsettled"
    _CLOSE_WAIT = 5.0

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
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = 0.0,
    ) -> None:
        core, self._pool = pool_core(
            endpoints,
            timeout,
            attempt_timeout,
            name=name,
            window=window,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
            schemas=schemas,
            max_batch=max_batch,
            linger=linger,
        )
        self.endpoint = ",".join(link.endpoint for link in self._pool.links)
        super().__init__(core, AsyncPoolReceipt, context, reconnect_ivl, reconnect_ivl_max)

    @property
    def brokers(self) -> list[dict[str, Any]]:
        """Per broker: endpoint, state (up, down, avoided (why), probing) and counts
        (after close: as they were at close)."""
        self._pump()
        return self._pool.brokers(_monotonic())

    def statistics(self) -> dict[str, Any]:
        """``brokers`` and the pool's counts: pending, waiting, resent, late_accepts,
        bad_replies."""
        self._pump()
        return self._pool.statistics(_monotonic())


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
        on_gap: Callable[[Gap], None] | None = None,
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
            on_gap=on_gap,
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
