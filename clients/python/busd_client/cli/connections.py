"""Whether busdctl's sockets are connected to busd, from libzmq's socket monitor, so a command
at a wrong endpoint says so instead of waiting in silence.

``MonitoredContext`` puts a monitor on every socket it makes, before the caller (a
``Subscriber``, through its public ``context`` parameter) connects it, so not one
connection event is missed. ``Connections`` reads those events and, per endpoint, says on
stderr when it has not connected within ``warn_after`` seconds (once, then "connected" when
it does), and when a connection is lost. libzmq keeps reconnecting by itself meanwhile.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

__all__ = ["Connections", "MonitoredContext"]

EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_MONITOR_STOPPED


class MonitoredContext(zmq.Context):  # type: ignore[type-arg]
    """A context whose SUB and DEALER sockets come with a monitor socket each."""

    monitors: list[zmq.Socket[bytes]]  # class-level annotation lets pyzmq accept the attribute

    def __init__(self) -> None:
        super().__init__()
        self.monitors = []

    def socket(self, socket_type: int, **kwargs: Any) -> zmq.Socket[bytes]:  # type: ignore[override]
        sock: zmq.Socket[bytes] = super().socket(socket_type, **kwargs)
        if socket_type in (zmq.SUB, zmq.DEALER):  # not the monitors' own PAIR sockets
            self.monitors.append(sock.get_monitor_socket(EVENTS))
        return sock


class Connections:
    """Connection state per endpoint, and the lines an operator needs about it.

    Error handling: a monitor event that cannot be parsed is skipped; a stopped monitor
    (its socket closed) is dropped. Nothing here raises into the command's loop.
    """

    def __init__(
        self, ctx: MonitoredContext, endpoints: list[str], warn_after: float, prog: str
    ) -> None:
        self.monitors = list(ctx.monitors)
        self.warn_after = warn_after
        self.prog = prog
        now = time.monotonic()
        self.waiting_since: dict[str, float] = dict.fromkeys(endpoints, now)  # not connected
        self.warned: set[str] = set()
        self.ever_connected = False

    def check(self) -> None:
        """Read pending monitor events, then say what changed or has waited too long."""
        for monitor in list(self.monitors):
            while monitor.poll(0):
                try:
                    event = parse_monitor_message(monitor.recv_multipart())
                except (ValueError, zmq.ZMQError):
                    continue
                self._event(monitor, event)
        now = time.monotonic()
        for endpoint, since in self.waiting_since.items():
            if endpoint not in self.warned and now - since >= self.warn_after:
                self.warned.add(endpoint)
                self._say(
                    f"not connected to {endpoint} after {now - since:.0f} s; still trying "
                    "(is busd running there? `busdctl status` checks)"
                )

    def _event(self, monitor: zmq.Socket[bytes], event: Mapping[str, Any]) -> None:
        endpoint = event.get("endpoint", b"")
        endpoint = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else endpoint
        kind = event.get("event")
        if kind == zmq.EVENT_MONITOR_STOPPED:
            self.monitors.remove(monitor)
            monitor.close(linger=0)
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.ever_connected = True
            self.waiting_since.pop(endpoint, None)
            if endpoint in self.warned:
                self.warned.discard(endpoint)
                self._say(f"connected to {endpoint}")
        elif kind == zmq.EVENT_DISCONNECTED and endpoint not in self.waiting_since:
            self.waiting_since[endpoint] = time.monotonic()
            self._say(f"lost the connection to {endpoint}; reconnecting")

    def _say(self, line: str) -> None:
        print(f"{self.prog}: {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for monitor in self.monitors:
            monitor.close(linger=0)
        self.monitors.clear()
