"""Publishing to and subscribing from a pool of independent brokers (docs/pool.md).

PoolPublisher sends each message to one broker of the pool and, when that broker fails it,
to another (pool_core.py decides); PoolSubscriber subscribes to every broker and drops the
copies a resend can cause (dedup.py). Both do all their I/O inside the caller's calls, from
one thread, like Publisher and Subscriber. PoolShell is what the sync and asyncio
(aio_pool.py) publishers share: the sockets and the non-blocking pump.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import zmq
import zmq.backend
from zmq.utils.monitor import parse_monitor_message

from busd_client._base import DEFAULT, PublisherBase, _Default
from busd_client.dedup import DedupWindow
from busd_client.errors import BusError, ClosedError, PublishTimeout
from busd_client.pool_core import Link, PoolCore, PoolPending
from busd_client.sockets import configure_dealer
from busd_client.subscriber import Subscriber
from busd_client.waiting import SyncWaiting
from busd_protocol.frames import encode_header
from busd_protocol.messages import Message
from busd_protocol.schemas import SchemaSet

__all__ = [
    "MONITOR_EVENTS",
    "PoolMembership",
    "PoolPublisher",
    "PoolReceipt",
    "PoolShell",
    "PoolSubscriber",
    "pool_endpoints",
]

_monotonic = time.monotonic
_NOBLOCK = zmq.NOBLOCK
_NOBLOCK_MORE = zmq.NOBLOCK | zmq.SNDMORE
_Again = zmq.Again
_send_frame = zmq.backend.Socket.send
# Connection up (handshake done, so the DEALER will queue to it) and connection lost.
MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


class PoolReceipt(PoolPending):
    """The fate of one message published to a pool; ``broker`` names who accepted it."""

    __slots__ = ("_owner",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._owner: PoolPublisher | None = None

    def result(self, timeout: float | None = None) -> None:
        """Wait until some broker accepted the message, or raise its error.

        ``timeout`` None waits as long as the message can take (the publisher's timeout;
        for ever if that is None); past a shorter ``timeout`` raises PublishTimeout and the
        message stays pending.
        """
        if not self._done and self._owner is not None:
            self._owner._wait_for(lambda: self._done, timeout, "not accepted yet")
        if self._error is not None:
            self._reported = True
            raise self._error


class PoolShell(PublisherBase):
    """The core, one DEALER and one monitor socket per broker, and the pump that moves
    replies and connection events into the core and its decisions onto the sockets. Every
    call here is non-blocking; the subclasses own the waiting (sync: a zmq.Poller; asyncio:
    a pump task)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        name: str,
        window: int,
        timeout: float | None,
        attempt_timeout: float,
        retry_deadline: float | None,
        wait_when_disabled: bool,
        schemas: SchemaSet | str | os.PathLike[str] | None,
    ) -> None:
        endpoints = pool_endpoints(endpoints)
        self.core = PoolCore(endpoints, attempt_timeout)
        super().__init__(
            ",".join(endpoints),
            name=name,
            window=window,
            timeout=math.inf if timeout is None else timeout,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
            schemas=schemas,
        )
        self._book = self.core
        self._owned: list[zmq.Socket[Any]] = []  # as the context made them: closed, polled
        self._socks: list[zmq.Socket[bytes]] = []  # sync views of the DEALERs, for I/O
        self._monitors: list[zmq.Socket[bytes]] = []  # sync views of the monitor sockets
        self._since_read = 0

    def _open(
        self, ctx: zmq.Context[Any], window: int, reconnect_ivl: float, reconnect_ivl_max: float
    ) -> None:
        """One DEALER and its monitor per broker. ``ctx`` may be a zmq.asyncio.Context: its
        sockets are used through sync views (no future per frame)."""
        try:
            for link in self.core.links:
                dealer = ctx.socket(zmq.DEALER)
                self._owned.append(dealer)
                sock: zmq.Socket[bytes] = zmq.Socket.shadow(dealer.underlying)
                self._socks.append(sock)
                configure_dealer(sock, window, reconnect_ivl, reconnect_ivl_max)
                monitor = dealer.get_monitor_socket(MONITOR_EVENTS)
                self._owned.append(monitor)
                self._monitors.append(zmq.Socket.shadow(monitor.underlying))
                sock.connect(link.endpoint)
        except Exception:
            self._close_sockets()
            raise

    @property
    def brokers(self) -> list[dict[str, Any]]:
        """Per broker: endpoint, state (up, down, avoided (why), probing) and counts
        (after close: as they were at close)."""
        if not self._closed:
            self._pump()
        now = _monotonic()
        return [link.snapshot(now) for link in self.core.links]

    def statistics(self) -> dict[str, Any]:
        core = self.core
        return {
            "pending": core.count,
            "waiting": len(core.waiting),
            "resent": core.resent,
            "late_accepts": core.late_accepts,
            "bad_replies": core.bad_replies,
            "brokers": self.brokers,
        }

    def _close_sockets(self) -> None:
        for sock in self._socks:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
        for s in self._owned:  # the views share them: closing these closes everything
            s.close(linger=0)

    def _send_to(self, link: Link, p: PoolPending) -> bool:
        sock = self._socks[link.index]
        try:
            _send_frame(sock, encode_header(link.next_seq), _NOBLOCK_MORE)
            _send_frame(sock, p.topic_frame, _NOBLOCK_MORE)
            _send_frame(sock, p.envelope, _NOBLOCK)
        except _Again:
            return False
        return True

    def _pump(self) -> None:
        """Read replies and connection events, move or fail overdue messages, send."""
        core = self.core
        now = _monotonic()
        for link, sock in zip(core.links, self._socks, strict=True):
            while True:
                try:
                    frame = sock.recv(_NOBLOCK)
                except _Again:
                    break
                core.on_reply(link, frame, now)
        for link, monitor in zip(core.links, self._monitors, strict=True):
            while True:
                try:
                    event = parse_monitor_message(monitor.recv_multipart(_NOBLOCK))
                except _Again:
                    break
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    core.on_connected(link)
                elif event["event"] == zmq.EVENT_DISCONNECTED:
                    core.on_disconnected(link)
        core.expire(now)
        core.dispatch(now, self._send_to)


class PoolPublisher(SyncWaiting, PoolShell):
    """Publish to a pool of brokers: each message to one live broker, failing over.

    ``timeout`` bounds a message's whole life: it fails with PublishTimeout only if no broker
    accepted it by then (None: it waits for ever, e.g. while every broker is down).
    ``attempt_timeout`` is how long one broker may take to answer before the message is sent
    to another (same id: subscribers drop the copy). ``window`` bounds messages not yet
    settled; ``publish`` blocks while it is full (up to ``timeout``).
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
        context: zmq.Context[Any] | None = None,
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
            context if context is not None else zmq.Context.instance(),
            window,
            reconnect_ivl,
            reconnect_ivl_max,
        )
        self._poller = zmq.Poller()
        for sock in self._owned:
            self._poller.register(sock, zmq.POLLIN)

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
    ) -> PoolReceipt:
        """Queue one message for the pool; return its receipt without waiting for a broker.

        Blocks while ``window`` messages are unsettled; raises PublishTimeout (``sent``
        False) if that lasts past ``timeout``.
        """
        if self._closed:
            raise ClosedError("publisher is closed")
        r = self._compose(
            PoolReceipt, topic, schema, version, data, id, retry_deadline, wait_when_disabled
        )
        r._owner = self
        if not self._make_room():
            raise self._unsent(r, "the in-flight window stayed full")
        now = _monotonic()
        r._deadline = now + self.timeout
        self.core.add(r, now, self._send_to)
        return r

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
    ) -> PoolReceipt:
        """publish() then wait until a broker accepted it; raise its error if it failed."""
        r = self.publish(
            topic,
            schema,
            version,
            data,
            id=id,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
        )
        r.result()
        return r

    def close(self, timeout: float | None = None) -> list[BusError]:
        """Flush (up to ``timeout``, default min(timeout, 5 s)), fail the rest, close."""
        if self._closed:
            return self.core.take_failures()
        wait = min(self.timeout, 5.0) if timeout is None else timeout
        with contextlib.suppress(PublishTimeout):
            self.flush(wait)
        self._closed = True
        self.core.close()
        self._close_sockets()
        return self.core.take_failures()

    def __enter__(self) -> PoolPublisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _next_wakeup(self, now: float) -> float | None:
        return self.core.next_wakeup(now)

    def _poll(self, timeout_ms: int) -> None:
        self._poller.poll(timeout_ms)


def pool_endpoints(endpoints: Sequence[str] | str) -> list[str]:
    """The brokers' endpoints as a list: a sequence, or one comma-separated string."""
    if isinstance(endpoints, str):
        endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
    if not endpoints:
        raise ValueError("a pool needs at least one broker endpoint")
    return list(endpoints)


class PoolMembership:
    """What a pool subscriber (sync or asyncio) adds to a subscriber: a connection to every
    broker, and the window that drops copies."""

    dedup: DedupWindow
    endpoints: list[str]
    _sock: Any  # the subscriber's SUB, connected to the first broker

    def _join(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
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

    def _decode(self, frames: list[bytes]) -> Message | None:
        message = super()._decode(frames)
        if message is None or self.dedup.first(message.id, _monotonic()):
            return message
        return None
