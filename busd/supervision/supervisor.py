"""A small one-for-one supervisor in the spirit of Erlang/OTP, for busd's peripheral tasks.

Each child is a coroutine factory. A child that crashes is restarted after an exponential
backoff (``backoff_initial``, doubling, at most ``backoff_max``). A *healthy* run, one that
lasted at least ``healthy_after`` seconds (default 10 s), resets the backoff: a task that
fails once an hour restarts after the initial backoff every time, not after the maximum.
More than ``budget`` crashes of one child within ``window`` seconds means something is
persistently wrong and the supervisor gives up (``GaveUp``); the app then drains and exits
70 so the service manager restarts the whole process. A child that returns is done.

The broker is deliberately not a child: its two sockets are its whole life, so it is never
restarted in place; the app ends the process when it ends (``App._main_loop``).
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
    """A child crashed more than the restart budget allows within the window."""


@dataclass(frozen=True, slots=True)
class TaskStatistics:
    """One supervised task, as of one moment."""

    name: str
    running: bool  # a run is in progress (False while backing off, or once it returned)
    restarts: int  # restarts after a crash, since start (a crash that ends in GaveUp is not one)
    crashes: int  # runs that ended with an exception, since start
    backoff: float  # seconds the next restart waits (0.0 until the first crash)
    last_error: str  # repr of the last crash's exception; "" when none


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    tasks: tuple[TaskStatistics, ...]

    @property
    def restarts_total(self) -> int:
        return sum(task.restarts for task in self.tasks)


@dataclass
class _Child:
    name: str
    factory: Callable[[], Awaitable[None]]
    crash_times: deque[float] = field(default_factory=deque)  # within the window
    backoff: float = 0.0
    restarts: int = 0
    crashes: int = 0
    running: bool = False
    last_error: str = ""


class Supervisor:
    def __init__(
        self,
        budget: int = 5,
        window: float = 60.0,
        *,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        healthy_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._budget = budget
        self._window = window
        self._initial = backoff_initial
        self._max = backoff_max
        self._healthy_after = healthy_after
        self._clock = clock
        self._children: list[_Child] = []

    def add(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self._children.append(_Child(name, factory))

    @property
    def restarts_total(self) -> dict[str, int]:
        """Restarts by task name (the ``busd_task_restarts_total`` counter)."""
        return {child.name: child.restarts for child in self._children}

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            tuple(
                TaskStatistics(c.name, c.running, c.restarts, c.crashes, c.backoff, c.last_error)
                for c in self._children
            )
        )

    async def run(self) -> None:
        """Run every child until each has returned or this is cancelled.

        Error handling: a child's exception (``Exception``; never cancellation) is logged
        with its traceback and the child is restarted after its backoff; past the budget,
        every other child is cancelled and ``GaveUp`` is raised. Anything that is not an
        ``Exception`` (KeyboardInterrupt, SystemExit) is not caught and ends the run.
        """
        try:
            async with asyncio.TaskGroup() as group:
                for child in self._children:
                    group.create_task(self._keep(child), name=f"supervise:{child.name}")
        except ExceptionGroup as failed:
            if all(isinstance(exc, GaveUp) for exc in failed.exceptions):
                raise failed.exceptions[0] from None  # the others were cancelled
            raise

    async def _keep(self, child: _Child) -> None:
        """Run one child until it returns. Error handling: ``run``'s."""
        while True:
            started = self._clock()
            child.running = True
            try:
                await child.factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                child.running = False
                self._note_crash(child, exc, self._clock() - started)
                await asyncio.sleep(child.backoff)
                child.restarts += 1
                continue
            finally:
                child.running = False
            return  # a child that finishes cleanly is done

    def _note_crash(self, child: _Child, exc: Exception, ran: float) -> None:
        """Count the crash; raise ``GaveUp`` past the budget, else set the backoff."""
        now = self._clock()
        child.crashes += 1
        child.last_error = repr(exc)
        child.crash_times.append(now)
        while child.crash_times and now - child.crash_times[0] > self._window:
            child.crash_times.popleft()
        if len(child.crash_times) > self._budget:
            _log.error(
                "task crashed past its restart budget",
                exc_info=exc,
                extra={"task": child.name, "crashes_in_window": len(child.crash_times)},
            )
            raise GaveUp(
                f"task {child.name} crashed {len(child.crash_times)} times in "
                f"{self._window:g}s; last: {exc!r}"
            ) from exc
        if ran >= self._healthy_after:
            child.backoff = self._initial  # a healthy run: start the backoff over
        else:
            child.backoff = min(self._max, max(self._initial, child.backoff * 2))
        _log.error(
            "task crashed; restarting",
            exc_info=exc,
            extra={
                "task": child.name,
                "ran_s": round(ran, 3),
                "backoff_s": child.backoff,
                "crashes_in_window": len(child.crash_times),
            },
        )
