"""The systemd notification protocol (sd_notify), written out: one datagram per state change.

With ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or an abstract
socket name starting with ``@``); busd sends ``STATUS=warming up, N s left`` during its
warm-up and ``READY=1`` when the warm-up ends (so ``systemctl start`` returns once busd
accepts publishes), ``STOPPING=1`` when it starts draining or its broker crashed, and
``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` from a task on the event loop, so a hung loop
stops the pings and systemd kills and restarts busd.
Without ``NOTIFY_SOCKET`` every call is a no-op. A failed send is logged once and otherwise
ignored: the service manager's bookkeeping must never take the bus down.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

from busd.logs import get
from busd.statistics import NotifyStatistics

_log = get("systemd")


def socket_address(value: str) -> str | None:
    """The ``sendto`` address for a ``NOTIFY_SOCKET`` value, or None if unusable."""
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. vsock:... (VMs): not for a service on this host


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when no watchdog is set
    for this process (``WATCHDOG_PID``, when given, must be ours)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2e6


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None):
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(raw) if raw else None
        self.watchdog = watchdog_interval(env, pid) if self.address else None
        self.pid = pid
        self.sent = 0
        self.failed = 0
        self.stopping_sent = False
        self._sock: socket.socket | None = None
        if raw and self.address is None:
            _log.warning("NOTIFY_SOCKET not usable; not notifying", extra={"value": raw})

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False when disabled or it failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # never stall the loop on a full receiver
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1:
                _log.warning(
                    "sd_notify failed",
                    extra={"error": str(exc), "state": fields[0] if fields else ""},
                )
            return False
        self.sent += 1
        return True

    def ready(self) -> bool:
        """``READY=1``; never after ``stopping`` (a drain that began in the warm-up)."""
        if self.stopping_sent:
            return False
        return self.send("READY=1", "STATUS=serving", f"MAINPID={self.pid}")

    def stopping(self) -> bool:
        self.stopping_sent = True
        return self.send("STOPPING=1", "STATUS=draining")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    async def run_watchdog(self) -> None:
        """Ping at the interval until cancelled; returns at once without a watchdog.

        Error handling: a failed ping is counted and logged once (``send``), never raised,
        and the next one is tried at the next interval; nothing here can crash.
        """
        if self.watchdog is None:
            return
        while True:
            self.ping()
            await asyncio.sleep(self.watchdog)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def statistics(self) -> NotifyStatistics:
        return NotifyStatistics(sent_total=self.sent, failed_total=self.failed)
