"""Publishing to and subscribing from a pool of independent brokers (docs/pool.md).

PoolPublisher is the sync driver over the pool strategy (pool_strategy.py): it sends each
message to one broker of the pool and, when that broker fails it, to another.
PoolSubscriber subscribes to every broker and drops the copies a resend can cause
(dedup.py). Both do all their I/O inside the caller's calls, from one thread, like
Publisher and Subscriber.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import zmq

from busd_client.core import DEFAULT_MAX_BATCH
from busd_client.dedup import DedupWindow
from busd_client.gaps import Gap, GapTracker
from busd_client.pool_strategy import pool_core, pool_endpoints
from busd_client.subscriber import Subscriber
from busd_client.sync_driver import SyncDriver, SyncReceipt
from busd_protocol.messages import Message
from busd_protocol.schemas import SchemaSet

__all__ = [
    "PoolMembership",
    "PoolPublisher",
    "PoolReceipt",
    "PoolSubscriber",
    "pool_endpoints",
]

_monotonic = time.monotonic


class PoolReceipt(SyncReceipt):
    """The fate of one message published to a pool; ``broker`` names who accepted it.

    ``result(timeout=None)`` waits until some broker accepted the message, or raises its
    error: as long as the message can take (the publisher's timeout; for ever if that is
    None); past a shorter ``timeout`` it raises PublishTimeout and the message stays
    pending.
    """

    __slots__ = ()
    _WAITING = "not accepted yet"


class PoolPublisher(SyncDriver[PoolReceipt]):
    """Publish to a pool of brokers: each message to one live broker, failing over.

    ``timeout`` bounds a message's whole life: it fails with PublishTimeout only if no broker
    accepted it by then (None: it waits for ever, e.g. while every broker is down).
    ``attempt_timeout`` is how long one broker may take to answer before the message is sent
    to another (same id: subscribers drop the copy). ``window`` bounds messages not yet
    settled; ``publish`` blocks while it is full (up to ``timeout``).
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
        context: zmq.Context[Any] | None = None,
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
        super().__init__(core, PoolReceipt, context, reconnect_ivl, reconnect_ivl_max)

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


class PoolMembership:
    """What a pool subscriber (sync or asyncio) adds to a subscriber: a connection to every
    broker, and the window that drops copies."""

    dedup: DedupWindow
    endpoints: list[str]
    tracker: GapTracker
    _sock: Any  # the subscriber's SUB, connected to the first broker

    def _join(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        # Each broker's stamps are its own stream (gaps.py): a copy from one broker neither
        # fills nor makes a gap in another's, and dedup runs after the stamp is taken.
        self.tracker.brokers = len(endpoints)
        for endpoint in endpoints[1:]:
            self._sock.connect(endpoint)

    @property
    def duplicates(self) -> int:
        """Copies dropped because their id was seen within the window."""
        return self.dedup.duplicates


class PoolSubscriber(PoolMembership, Subscriber):
    """Subscribe to every broker of a pool and deliver each message once.

    One SUB socket connects to all ``endpoints`` (libzmq fair-queues between them). Copies of
    a message (same ``id``) within the dedup window — the last ``dedup_size`` messages and at
    most ``dedup_ttl`` seconds — are dropped and counted in ``duplicates``.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        prefixes: str | bytes | Iterable[str | bytes] = (),
        *,
        dedup_size: int = 200_000,
        dedup_ttl: float = 60.0,
        rcvhwm: int = 10_000,
        context: zmq.Context[Any] | None = None,
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

    def _decode(self, frames: list[bytes]) -> Message | None:
        message = super()._decode(frames)
        if message is None or self.dedup.first(message.id, _monotonic()):
            return message
        return None
