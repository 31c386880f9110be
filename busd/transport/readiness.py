"""Waking an owner task when its ZeroMQ sockets may have work.

A ZeroMQ socket's ZMQ_FD is edge-triggered: it becomes readable when the socket's state may
have changed, and only ``ZMQ_EVENTS`` (or a send/recv) tells what changed. So the owner must
clear its wake-up flag *before* asking ``ZMQ_EVENTS``, and must ask again after every send,
which can consume the signal that input arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import zmq


class Readiness:
    def __init__(self, sockets: Sequence[zmq.Socket[bytes]]):
        self._sockets = list(sockets)
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._fds = [int(s.get(zmq.FD)) for s in self._sockets]
        for fd in self._fds:
            self._loop.add_reader(fd, self._event.set)

    def pending(self) -> bool:
        """Whether any socket has input now; consumes the FD's edge."""
        return any(int(s.get(zmq.EVENTS)) & zmq.POLLIN for s in self._sockets)

    async def wait(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - a wait bound, not a cancel scope
        """Until a socket has input (True) or ``timeout`` passes (False)."""
        self._event.clear()
        if self.pending():
            return True
        if timeout is None:
            await self._event.wait()
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
                return True
        return self.pending()

    def wake(self) -> None:
        """Wake the waiter from outside (e.g. to start draining)."""
        self._event.set()

    def close(self) -> None:
        for fd in self._fds:
            self._loop.remove_reader(fd)
        self._fds = []
