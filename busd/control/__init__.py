"""Operator control at run time: the rates directory and the control socket.

``RateControl`` wires the pieces for the app:

    rates = RateControl(config.rates_path, admission)   # installs its RateTable
    await rates.start()            # before traffic: limits in force from the first message
    supervisor.add("rates", rates.run)                  # polls the directory
    control = ControlServer(config.control_path, {**rates.handlers(), ...})
    await control.start()          # ControlSocketError: another busd serves that path

The broker and these tasks share one event loop: ``on_change`` runs on it, so new limits are
installed between messages, never during one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from busd.control.rates_dir import Change, RatesDir, rates_statistics
from busd.control.server import ControlError, ControlServer, ControlSocketError, Handler
from busd.control.server import rate_handlers as _rate_handlers
from busd.kernel.admission import Admission
from busd.kernel.buckets import RateTable
from busd.statistics import RatesStatistics
from busd_protocol.rates import Limits

__all__ = [
    "ControlError",
    "ControlServer",
    "ControlSocketError",
    "Handler",
    "RateControl",
    "RatesDir",
]


class RateControl:
    """The rate table, the watcher of its directory, and the ``rates.*`` commands."""

    def __init__(
        self,
        rates_path: str | os.PathLike[str],
        admission: Admission,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: float = 0.25,
    ):
        self.clock = clock  # the clock the broker passes to Admission.decide
        self.table = RateTable()
        admission.install_rates(self.table)
        self.watcher = RatesDir(rates_path, self._install, poll_interval)

    def _install(self, limits: Limits, changes: tuple[Change, ...]) -> None:
        self.table.configure(limits, self.clock())

    async def start(self) -> None:
        """Create the directory if needed and apply its files."""
        await self.watcher.start()

    async def run(self) -> None:
        """Poll the directory until cancelled (a supervised task; safe to restart).

        Error handling: ``RatesDir.run``'s.
        """
        await self.watcher.run()

    def handlers(self) -> dict[str, Handler]:
        return _rate_handlers(self.table, self.watcher, self.clock)

    def statistics(self) -> RatesStatistics:
        return rates_statistics(self.table, self.watcher)

    def close(self) -> None:
        self.watcher.close()
