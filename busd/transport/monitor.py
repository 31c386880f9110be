"""Connection counting from ZeroMQ socket monitor events.

What it retries and lets crash: nothing is retried here; an error ends the task and the
supervisor restarts it with a fresh monitor socket.
"""

from __future__ import annotations

from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from busd.ops.logs import RateLimitedLog, get
from busd.transport.readiness import Readiness

_log = get("monitor")

EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class ConnectionStats:
    __slots__ = ("accepted", "disconnected", "handshake_failures", "handshakes")

    def __init__(self) -> None:
        self.accepted = 0
        self.disconnected = 0
        self.handshakes = 0
        self.handshake_failures = 0

    @property
    def connected(self) -> int:
        """Open TCP/IPC connections (including ones still in the handshake)."""
        return max(0, self.accepted - self.disconnected)

    def snapshot(self) -> dict[str, Any]:
        return {"connected": self.connected, "accepted": self.accepted,
                "disconnected": self.disconnected, "handshakes": self.handshakes,
                "handshake_failures": self.handshake_failures}


async def watch(sock: zmq.Socket[bytes], stats: ConnectionStats, role: str) -> None:
    """Own ``sock`` (a monitor PAIR socket) until cancelled; count what it reports."""
    limited = RateLimitedLog(_log)
    ready = Readiness([sock])
    try:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                await ready.wait()
                continue
            event = parse_monitor_message(frames)["event"]
            if event == zmq.EVENT_ACCEPTED:
                stats.accepted += 1
            elif event == zmq.EVENT_DISCONNECTED:
                stats.disconnected += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                stats.handshakes += 1
            elif event & _FAILED:
                stats.handshake_failures += 1
                limited.warning(f"{role}.handshake", "handshake failed: not a ZMTP peer?",
                                role=role, endpoint=frames[1].decode(errors="replace"))
    finally:
        ready.close()
        sock.close(linger=0)
