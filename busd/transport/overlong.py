"""A message with more frames than a publish has, read and dropped a slice at a time.

libzmq hands over a multipart message whole and in order, so no other message can be read
before this one's last frame: reading at most ``frame_slice`` frames per wake-up bounds how
long the event loop is held (``/healthz``, the watchdog and the control socket go on), not
how long other publishers wait (docs/protocol.md §5). Per frame this is one ``recv`` and a
``more`` test, about 1 µs.
"""

from __future__ import annotations

import zmq

from busd_protocol.codes import Code, Reject
from busd_protocol.frames import INGRESS_FRAMES, read_header

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

    __slots__ = ("frames", "header", "ident")

    def __init__(self, ident: bytes, header: bytes, frames: int):
        self.ident = ident
        self.header = header
        self.frames = frames

    def resume(self, router: zmq.Socket[bytes], budget: int) -> tuple[int, bool]:
        """One more slice: frames read now, and whether the message has ended."""
        extra, ended = discard(router, budget)
        self.frames += extra
        return extra, ended

    def verdict(self) -> tuple[int | None, Reject]:
        """The sequence number and refusal once it has ended (malformed whatever the
        broker's state, as any message of the wrong frame count)."""
        seq, reject = read_header(self.header)
        if reject is None:
            reject = Reject(Code.BAD_FRAME, f"expected {INGRESS_FRAMES} frames, got {self.frames}")
        return seq, reject
