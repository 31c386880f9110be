"""The synchronous publisher: one DEALER socket, all I/O done inside the caller's calls."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import zmq
import zmq.backend

from busd_client._base import DEFAULT, PublisherBase, _Default
from busd_client.errors import BusError, ClosedError, PublishTimeout
from busd_client.inflight import Pending
from busd_client.sockets import DEFAULT_PUB_ENDPOINT, configure_dealer
from busd_client.waiting import SyncWaiting
from busd_protocol.schemas import SchemaSet

__all__ = ["Publisher", "Receipt"]

_monotonic = time.monotonic
_NOBLOCK = zmq.NOBLOCK
_POLLIN = zmq.POLLIN
_Again = zmq.Again
# A retry that found the socket full or disconnected is tried again after this long.
_RESEND_DELAY = 0.05


class Receipt(Pending):
    """The fate of one published message. ``result()`` waits for it."""

    __slots__ = ("_owner",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._owner: Publisher | None = None

    def result(self, timeout: float | None = None) -> None:
        """Wait until busd answered; raise the message's error (Rejected, PublishTimeout...).

        ``timeout`` None waits as long as the message can take (its reply deadline, plus the
        retry deadline); past a shorter ``timeout`` it raises PublishTimeout and the message
        stays pending.
        """
        if not self._done and self._owner is not None:
            self._owner._wait_for(lambda: self._done, timeout, "no reply yet")
        if self._error is not None:
            self._reported = True
            raise self._error


class Publisher(SyncWaiting, PublisherBase):
    """Publish to busd from one thread (a zmq socket must not be shared between threads).

    ``publish`` sends and returns a Receipt without waiting for the reply; at most
    ``window`` messages are in flight, so ``publish`` waits when busd falls behind.
    ``timeout`` bounds every wait for busd: a message with no reply within it fails with
    PublishTimeout. ``retry_deadline`` (seconds, None/0 = never) lets `rate_limited` (and,
    with ``wait_when_disabled``, `disabled`) refusals be retried until that long after
    publish. Replies are read during publish/flush/result calls: call ``flush`` at the end.
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
        context: zmq.Context[Any] | None = None,
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
        ctx = context if context is not None else zmq.Context.instance()
        self._sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        configure_dealer(self._sock, window, reconnect_ivl, reconnect_ivl_max)
        self._sock.connect(endpoint)
        self._since_read = 0

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
    ) -> Receipt:
        """Send one message; return its Receipt without waiting for busd's reply.

        Raises PublishTimeout (``sent`` False) when the message could not be handed to a
        connection within ``timeout``: busd is unreachable or the window stayed full.
        """
        if self._closed:
            raise ClosedError("publisher is closed")
        r = self._compose(
            Receipt, topic, schema, version, data, id, retry_deadline, wait_when_disabled
        )
        r._owner = self
        if not self._make_room():
            raise self._unsent(r, "the in-flight window stayed full")
        if not self._send(r):
            deadline = _monotonic() + self.timeout
            while not self._send(r):
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise self._unsent(r, "no connection to busd accepted the message")
                self._pump()
                self._sock.poll(
                    math.ceil(min(remaining, self._wait_cap()) * 1000), _POLLIN | zmq.POLLOUT
                )
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
    ) -> Receipt:
        """publish() then wait for the reply; raise the message's error if it failed."""
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
        """Flush (up to ``timeout``, default the publisher's timeout), then close the socket.

        Messages still pending fail with ClosedError; returns all failures not yet flushed.
        """
        if self._closed:
            return self._inflight.take_failures()
        with contextlib.suppress(PublishTimeout):
            self.flush(self.timeout if timeout is None else timeout)
        self._closed = True
        self._inflight.close()
        self._sock.close(linger=0)
        return self._inflight.take_failures()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Read every reply already here, time out overdue messages, send due retries."""
        sock = self._sock
        inflight = self._inflight
        now = _monotonic()
        while True:
            try:
                frame = sock.recv(_NOBLOCK)
            except _Again:
                break
            inflight.on_reply(frame, now)
        inflight.expire(now)
        for p in inflight.due_retries(now):
            if not self._send(p):
                inflight.retry_later(p, now, _RESEND_DELAY)

    def _next_wakeup(self, now: float) -> float | None:
        return self._inflight.next_wakeup()

    def _poll(self, timeout_ms: int) -> None:
        self._sock.poll(timeout_ms, _POLLIN)

    def _wait_cap(self) -> float:
        """Seconds until the in-flight bookkeeping next has timer work (at most 1 s)."""
        wake = self._inflight.next_wakeup()
        if wake is None:
            return 1.0
        return min(1.0, max(0.0, wake - _monotonic()))
