"""A small one-for-one supervisor in the spirit of Erlang/OTP.

Each child is a coroutine factory. A ``critical`` child that ends for any reason ends the
supervisor (and so the process: the service manager restarts it). Any other child that
crashes is restarted after an exponential backoff; more than ``budget`` restarts within
``window`` seconds means something is persistently wrong, and the supervisor gives up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from busd.logs import get

_log = get("supervisor")


class GaveUp(RuntimeError):
    """A child crashed past the restart budget, or a critical child ended."""


@dataclass
class _Child:
    name: str
    factory: Callable[[], Awaitable[None]]
    critical: bool
    restarts: deque[float] = field(default_factory=deque)
    backoff: float = 0.0


class Supervisor:
    def __init__(
        self,
        budget: int = 5,
        window: float = 60.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._budget = budget
        self._window = window
        self._initial = backoff_initial
        self._max = backoff_max
        self._clock = clock
        self._children: list[_Child] = []
        self.restarts_total: dict[str, int] = {}

    def add(
        self, name: str, factory: Callable[[], Awaitable[None]], *, critical: bool = False
    ) -> None:
        self._children.append(_Child(name, factory, critical))
        self.restarts_total[name] = 0

    async def run(self) -> None:
        """Run every child until cancelled; raises ``GaveUp`` when the budget is spent."""
        async with asyncio.TaskGroup() as group:
            for child in self._children:
                group.create_task(self._keep(child), name=f"supervise:{child.name}")

    async def _keep(self, child: _Child) -> None:
        while True:
            try:
                await child.factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if child.critical:
                    raise GaveUp(f"critical task {child.name} crashed: {exc!r}") from exc
                self._note_restart(child, exc)
                await asyncio.sleep(child.backoff)
                continue
            if child.critical:
                raise GaveUp(f"critical task {child.name} ended")
            return  # a peripheral child that finishes cleanly is done

    def _note_restart(self, child: _Child, exc: Exception) -> None:
        now = self._clock()
        child.restarts.append(now)
        while child.restarts and now - child.restarts[0] > self._window:
            child.restarts.popleft()
        self.restarts_total[child.name] += 1
        if len(child.restarts) > self._budget:
            raise GaveUp(
                f"task {child.name} crashed {len(child.restarts)} times in "
                f"{self._window:g}s; last: {exc!r}"
            ) from exc
        child.backoff = min(self._max, max(self._initial, child.backoff * 2))
        _log.error(
            "task crashed; restarting",
            exc_info=exc,
            extra={
                "task": child.name,
                "backoff_s": child.backoff,
                "restarts_in_window": len(child.restarts),
            },
        )
