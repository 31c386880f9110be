"""Closing one peer's connection of a ZeroMQ socket that has no per-peer close (ROUTER, XPUB).

libzmq tells which connection a message came from (``zmq_msg_get(ZMQ_SRCFD)``, the file
descriptor of its TCP or IPC socket) but offers no call to close one connection of a
ROUTER or XPUB. busd calls ``shutdown(2)`` on that descriptor (on a duplicate: the socket
is shared, the descriptor is not): libzmq then sees the connection end and cleans up as for
any disconnect, freeing what it queued for that peer.

A descriptor read from a message may since have been closed and reused, by a new
connection or by any other socket of this process. So a connection is cut only when the
descriptor's local address is the busd socket's endpoint and, when the caller knows it, its
peer address is the one the caller saw before.
"""

from __future__ import annotations

import contextlib
import os
import socket

import zmq


def _addresses(fd: int) -> tuple[object, object] | None:
    """The local and remote addresses of socket ``fd`` (a duplicate is inspected)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            return sock.getsockname(), sock.getpeername()
    except OSError:
        return None


class Endpoint:
    """The connections accepted on one bound endpoint (tcp:// or ipc://)."""

    def __init__(self, endpoint: str = ""):
        self._local: object = None
        if endpoint.startswith("tcp://"):
            self._local = int(endpoint.rsplit(":", 1)[1])  # the host may be a wildcard
        elif endpoint.startswith("ipc://"):
            self._local = endpoint[len("ipc://") :]

    def peer(self, fd: int) -> object:
        """The remote address of ``fd`` when it is a connection of this endpoint, else None."""
        if self._local is None:
            return None
        found = _addresses(fd)
        if found is None:
            return None
        local, remote = found
        mine = local[1] if isinstance(local, tuple) else local
        return remote if mine == self._local else None

    def cut(self, fd: int, peer: object = None) -> bool:
        """Close the connection on ``fd`` if it is still one of this endpoint's (and still
        ``peer``'s, when given); True when it was cut."""
        found = self.peer(fd)
        if found is None or (peer is not None and found != peer):
            return False
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
            return True
        return False


class DeafPublishers:
    """Publishers that do not read their replies: noted when a reply to one fails at
    ``reply_hwm`` (EAGAIN), closed when the broker next reads a message from one.

    Its queued replies (up to ``reply_hwm`` frames of up to ``batch`` rejections each) are
    what such a publisher makes busd hold; libzmq frees them when the connection closes. The
    message being read is still judged and answered (that answer is lost with the
    connection); the publisher reconnects and its unanswered messages time out.
    """

    def __init__(self) -> None:
        self.endpoint = Endpoint()  # the ROUTER's, set once bound
        self.unread: set[bytes] = set()  # routing ids whose replies hit reply_hwm
        self._cut: set[bytes] = set()  # ... and already cut: its queued messages still come

    def not_reading(self, ident: bytes) -> None:
        if ident in self._cut:
            return
        if len(self.unread) > 4096:  # ids of publishers that left meanwhile
            self.unread.clear()
        self.unread.add(ident)

    def cut(self, ident: bytes, frame: zmq.Frame) -> bool:
        """Close the connection ``frame`` came from (once per routing id); True when cut."""
        self.unread.discard(ident)
        if len(self._cut) > 4096:
            self._cut.clear()
        self._cut.add(ident)
        try:
            fd = int(frame.get(zmq.SRCFD))
        except zmq.ZMQError:
            return False  # inproc: no connection to cut
        return self.endpoint.cut(fd)
