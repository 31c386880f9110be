"""The synchronous subscriber: a SUB socket yielding decoded Messages."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Self

import zmq
import zmq.backend

from busd_client.gaps import Gap, GapTracker
from busd_client.latency import LatencyRecorder
from busd_client.sockets import DEFAULT_SUB_ENDPOINT, configure_sub
from busd_protocol.messages import DecodeError, Message, decode_message

__all__ = ["Subscriber", "prefix_bytes"]

# The backend's recv skips pyzmq's sugar layer (recv_multipart asks RCVMORE with a
# getsockopt per frame): a message costs ~2 µs instead of ~3.8 (docs/performance.md).
_recv_frame = zmq.backend.Socket.recv
# zmq_poll on a prepared list: Socket.poll builds a Poller per call (~1 µs more per wait).
_zmq_poll = zmq.backend.zmq_poll
# A poll that returned within this many seconds found a message already queued.
_QUEUED = 10e-6
_NOBLOCK = zmq.NOBLOCK
_Again = zmq.Again
_time_ns = time.time_ns
_monotonic = time.monotonic


def prefix_bytes(prefixes: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    """Topic prefixes as the bytes ZMQ_SUBSCRIBE takes (one string counts as one prefix)."""
    if isinstance(prefixes, str | bytes):
        prefixes = [prefixes]
    return [p.encode() if isinstance(p, str) else bytes(p) for p in prefixes]


class Subscriptions:
    """Topic-prefix subscriptions and gap detection, shared by the sync and asyncio
    subscribers."""

    _sock: zmq.Socket[Any]
    tracker: GapTracker  # sequence state from busd's delivery stamps (gaps.py)

    @property
    def gaps(self) -> int:
        """Gaps seen: times messages of a topic were lost on the way here."""
        return self.tracker.gaps

    @property
    def missed(self) -> int:
        """Messages lost in those gaps."""
        return self.tracker.missed

    @property
    def epoch_changes(self) -> int:
        """Restarts of busd seen (what was in flight then is unknowable)."""
        return self.tracker.epoch_changes

    def _frames(self, frames: list[bytes]) -> Message | None:
        """Decode topic and envelope (frames 0 and 1), take the stamp (frame 2) first: a
        message that fails to decode still counts in its topic's sequence."""
        n = len(frames)
        if n == 3:
            if not self.tracker.observe(frames[0], frames[2]):
                return None
        elif n == 2:
            self.tracker.observe(frames[0], None)
        else:
            return None
        try:
            return decode_message(frames[0], frames[1])
        except DecodeError:
            return None

    def subscribe(self, prefixes: str | bytes | Iterable[str | bytes]) -> None:
        for p in prefix_bytes(prefixes):
            self._sock.setsockopt(zmq.SUBSCRIBE, p)

    def unsubscribe(self, prefixes: str | bytes | Iterable[str | bytes]) -> None:
        for p in prefix_bytes(prefixes):
            self._sock.setsockopt(zmq.UNSUBSCRIBE, p)


class Subscriber(Subscriptions):
    """Receive messages whose topic starts with a subscribed prefix ("" = everything).

    A subscription takes effect once it reached busd (a few ms after connecting); messages
    published before that are not delivered. Undecodable messages are skipped and counted in
    ``bad_messages``. Losses are counted from busd's delivery stamps (``gaps``, ``missed``,
    ``epoch_changes``) and each is given to ``on_gap`` as a ``Gap`` (docs/client.md
    "Gaps"). Use from one thread.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_SUB_ENDPOINT,
        prefixes: str | bytes | Iterable[str | bytes] = (),
        *,
        rcvhwm: int = 10_000,
        context: zmq.Context[Any] | None = None,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 1.0,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> None:
        ctx = context if context is not None else zmq.Context.instance()
        self.endpoint = endpoint
        self.bad_messages = 0
        self.tracker = GapTracker(1, on_gap)
        self.latency = LatencyRecorder()  # receive time - publisher's ts, every message
        self._sock: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        self._poll_list = [(self._sock, zmq.POLLIN)]
        self._backlog = False  # the last poll found a message queued: read without polling
        configure_sub(self._sock, rcvhwm, reconnect_ivl, reconnect_ivl_max)
        self._sock.connect(endpoint)
        self.subscribe(prefixes)

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None when ``timeout`` seconds pass first (None: no limit).

        Error handling: a message that does not decode (docs/protocol.md §3) is counted in
        ``bad_messages`` and skipped; nothing else is caught (a ZMQError, e.g. the socket
        closed, reaches the caller).
        """
        deadline = None if timeout is None else _monotonic() + timeout
        sock = self._sock
        poll_list = self._poll_list
        while True:
            # Messages queued (a backlog) are read with a non-blocking recv; when it finds
            # none (zmq.Again costs ~3 µs) the socket is polled instead (~1 µs when a
            # message is there), until a poll finds one already queued again.
            if self._backlog:
                try:
                    first = _recv_frame(sock, _NOBLOCK, False)
                except _Again:
                    self._backlog = False
                    continue
            else:
                began = _monotonic()
                if deadline is None:
                    _zmq_poll(poll_list, -1)
                elif not _zmq_poll(poll_list, max(0, math.ceil((deadline - began) * 1000))):
                    return None
                self._backlog = _monotonic() - began < _QUEUED
                try:
                    first = _recv_frame(sock, _NOBLOCK, False)
                except _Again:  # polled in, yet gone: never block on it
                    continue
            message = self._decode(self._rest(sock, first))
            if message is not None:
                return message

    @staticmethod
    def _rest(sock: zmq.Socket[bytes], first: zmq.Frame) -> list[bytes]:
        """The frames of the message whose first frame is ``first``, every one read as a
        frame to see whether more follow (busd sends three, an older one two: any other
        shape is read whole, and refused by ``_frames``, never mistaken for the next)."""
        frames = [first.bytes]
        more = first.more
        while more:
            frame = _recv_frame(sock, 0, False)
            frames.append(frame.bytes)
            more = frame.more
        return frames

    def _decode(self, frames: list[bytes]) -> Message | None:
        message = self._frames(frames)
        if message is None:
            self.bad_messages += 1
            return None
        self.latency.observe_ns(_time_ns() - message.ts)
        return message

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.recv()
            if message is not None:
                yield message

    def close(self) -> None:
        self._sock.close(linger=0)

    @property
    def closed(self) -> bool:
        return bool(self._sock.closed)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
