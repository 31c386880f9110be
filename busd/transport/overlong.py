"""A message with more frames than a batch may have, read and dropped a slice at a time.

libzmq hands over a multipart message whole and in order, so no other message can be read
before this one's last frame: reading at most ``frame_slice`` frames per wake-up bounds how
long the event loop is held (``/healthz``, the watchdog and the control socket go on), not
how long other publishers wait (docs/protocol.md §5). Per frame this is one ``recv`` and a
``more`` test, about 1 µs.
"""

from __future__ import annotations

import zmq

from busd.transport.ingress import overlong_refusals
from busd_protocol.codes import Reject

_recv = zmq.backend.Socket.recv


def discard(router: zmq.Socket[bytes], budget: int) -> tuple[int, bool]:
    """Read and drop up to ``budget`` frames of the message being read; return how many were
    read and whether the message ended."""
    recv = _recv
    for count in range(1, budget + 1):
        if not recv(router, 0, False).more:
            return count, True
    return budget, False


class Overlong:
    """The message being discarded across wake-ups: who sent it, its header, frames so far."""

    __slots__ = ("frames", "header", "ident", "max_batch")

    def __init__(self, ident: bytes, header: bytes, frames: int, max_batch: int):
        self.ident = ident
        self.header = header
        self.frames = frames
        self.max_batch = max_batch

    def resume(self, router: zmq.Socket[bytes], budget: int) -> tuple[int, bool]:
        """One more slice: frames read now, and whether the message has ended."""
        extra, ended = discard(router, budget)
        self.frames += extra
        return extra, ended

    def verdict(self) -> list[tuple[int | None, Reject]]:
        """The refusals once it has ended (malformed whatever the broker's state, as any
        message of the wrong frame count): ``ingress.overlong_refusals``."""
        return overlong_refusals(self.header, self.frames, self.max_batch)
