"""Connection counting from ZeroMQ socket monitor events.

A connection that never completes the ZMTP handshake is a handshake failure. libzmq 4.3
reports HANDSHAKE_FAILED_* for some (an HTTP request, random bytes, a silent peer past
HANDSHAKE_IVL) but for others (a socket-type mismatch, a bogus ZMTP greeting) it only says
ACCEPTED then DISCONNECTED. So accepted connections wait in a FIFO until a handshake
outcome or their disconnect: HANDSHAKE_SUCCEEDED carries no fd, so outcomes are matched to
the oldest waiting connection. Under concurrent connects that attribution may pick the wrong
one of two, but every connection is counted exactly once as a success or a failure.

Error handling: see ``watch``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from busd.logs import RateLimitedLog, get
from busd.statistics import ConnectionStatistics
from busd.transport.readiness import Readiness

_log = get("monitor")

EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_ACCEPT_FAILED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class ConnectionStats:
    __slots__ = (
        "accept_failures",
        "accepted",
        "disconnected",
        "handshake_failures",
        "handshakes",
        "pending",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.disconnected = 0
        self.handshakes = 0
        self.handshake_failures = 0
        # accept(2) failed (EMFILE: the fd limit; libzmq retries at once, spinning a core):
        # what bounds connections is the fd limit (LimitNOFILE), docs/operations.md §10.
        self.accept_failures = 0
        self.pending: dict[int, None] = {}  # fds accepted, handshake outcome not yet seen

    def on_event(self, event: int, value: int) -> bool:
        """Count one monitor event; True when it means a handshake failed."""
        if event == zmq.EVENT_ACCEPTED:
            self.accepted += 1
            if len(self.pending) < 65536:  # bounded even if libzmq never reports an outcome
                self.pending[value] = None
        elif event == zmq.EVENT_ACCEPT_FAILED:
            self.accept_failures += 1
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.handshakes += 1
            self._resolve_oldest()
        elif event & _FAILED:
            self.handshake_failures += 1
            self._resolve_oldest()
            return True
        elif event == zmq.EVENT_DISCONNECTED:
            self.disconnected += 1
            if self.pending.pop(value, 0) is None:  # closed before any handshake outcome
                self.handshake_failures += 1
                return True
        return False

    def _resolve_oldest(self) -> None:
        if self.pending:
            del self.pending[next(iter(self.pending))]

    @property
    def connected(self) -> int:
        """Open TCP/IPC connections (including ones still in the handshake)."""
        return max(0, self.accepted - self.disconnected)

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            connected=self.connected,
            accepted=self.accepted,
            disconnected=self.disconnected,
            handshakes=self.handshakes,
            handshake_failures=self.handshake_failures,
            accept_failures=self.accept_failures,
        )


async def watch(
    sock: zmq.Socket[bytes],
    stats: ConnectionStats,
    role: str,
    on_fd: Callable[[int], None] | None = None,
) -> None:
    """Own ``sock`` (a monitor PAIR socket) until cancelled; count what it reports.

    ``on_fd(fd)`` is called for every connection closed (what was known of that fd is over;
    not on ACCEPTED, which this task may see after the broker has read the connection's
    first messages).

    Error handling: nothing is retried here. A handshake failure is counted and logged at a
    limited rate; any error (a malformed event, a socket error) ends the task, the socket
    is closed, and the supervisor restarts it with a fresh monitor socket.
    """
    limited = RateLimitedLog(_log)
    ready = Readiness([sock])
    try:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                await ready.wait()
                continue
            parsed = parse_monitor_message(frames)
            event, value = int(parsed["event"]), int(parsed["value"])
            if on_fd is not None and event == zmq.EVENT_DISCONNECTED:
                on_fd(value)
            if event == zmq.EVENT_ACCEPT_FAILED:
                limited.warning(
                    f"{role}.accept",
                    "accept failed: out of file descriptors? (raise LimitNOFILE)",
                    role=role,
                    errno=value,
                    error=os.strerror(value),
                )
            if stats.on_event(event, value):
                limited.warning(
                    f"{role}.handshake",
                    "handshake failed: not a ZMTP peer?",
                    role=role,
                    endpoint=frames[1].decode(errors="replace"),
                )
    finally:
        ready.close()
        sock.close(linger=0)
