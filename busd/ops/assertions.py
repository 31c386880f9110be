"""Service-level assertions, checked every second against busd's live figures.

The assertions file (TOML, path from the ``assertions`` setting) holds named tables::

    [assertions.latency]
    expr = "p99_latency_ms < 50"
    window = "60s"
    critical = true

Every ``interval`` seconds the monitor takes a ``Sample`` of ``App.statistics()``, computes
the figures of each distinct window from the sample now and the newest sample at least that
old (the oldest one while busd is younger than the window), and evaluates each assertion.
Each change of state is logged (``assertion violated`` / ``assertion holds``, with the
figures the expression reads); the state is exported as ``busd_assertion_ok{name}``; a
critical assertion that is violated makes ``/readyz`` answer 503. SIGHUP re-reads the file;
a broken file at start-up stops busd, a broken file on reload keeps the previous set.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from busd.logs import get
from busd.ops.assertion_rules import Assertion, AssertionConfigError, names, parse_file
from busd.ops.figures import FIGURES, Figures, Sample, compute, sample
from busd.statistics import AssertionStatistics, Statistics

_log = get("assertions")


def load_file(path: str) -> tuple[Assertion, ...]:
    """Read and check an assertions file; raises AssertionConfigError naming the problem."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise AssertionConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AssertionConfigError(f"{path}: {exc}") from None
    try:
        return parse_file(data, FIGURES)
    except AssertionConfigError as exc:
        raise AssertionConfigError(f"{path}: {exc}") from None


@dataclass(slots=True)
class _State:
    ok: bool | None = None  # None: not evaluated yet
    violations: int = 0
    since: float = 0.0  # monotonic time of the last change


class AssertionMonitor:
    def __init__(
        self,
        path: str,
        statistics: Callable[[], Statistics],
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = path
        self.interval = interval
        self._statistics = statistics
        self._clock = clock
        self.assertions: tuple[Assertion, ...] = ()
        self._states: dict[str, _State] = {}
        self._samples: deque[Sample] = deque()

    # -- configuration -------------------------------------------------------------------
    def load(self) -> None:
        """Read the file (start-up); raises AssertionConfigError."""
        self._install(load_file(self.path))

    def reload(self) -> None:
        """Read the file again (SIGHUP); on error keep the current set and log why."""
        try:
            assertions = load_file(self.path)
        except AssertionConfigError as exc:
            _log.error(
                "assertions not reloaded; keeping the previous set", extra={"error": str(exc)}
            )
            return
        self._install(assertions)

    def _install(self, assertions: tuple[Assertion, ...]) -> None:
        self.assertions = assertions
        # Keep the state of assertions that survive a reload, so no spurious change is logged.
        self._states = {a.name: self._states.get(a.name, _State()) for a in assertions}
        _log.info(
            "assertions loaded",
            extra={
                "path": self.path,
                "assertions": {a.name: a.source for a in assertions},
                "critical": [a.name for a in assertions if a.critical],
            },
        )

    # -- evaluation ----------------------------------------------------------------------
    def _baseline(self, now: Sample, window: float) -> Sample:
        samples = self._samples
        # Newest sample taken at least ``window`` seconds before ``now``.
        i = bisect.bisect_right(samples, now.at - window, key=lambda s: s.at)
        return samples[i - 1] if i > 0 else samples[0]

    def tick(self) -> None:
        """Take a sample and evaluate every assertion (cheap: a few attribute reads)."""
        now = sample(self._statistics(), self._clock())
        self._samples.append(now)
        longest = max((a.window for a in self.assertions), default=0.0)
        while len(self._samples) > 2 and self._samples[1].at <= now.at - longest:
            self._samples.popleft()
        figures: dict[float, Figures] = {}
        for assertion in self.assertions:
            window = assertion.window
            if window not in figures:
                figures[window] = compute(now, self._baseline(now, window))
            self._judge(assertion, figures[window], now.at)

    def _judge(self, assertion: Assertion, figures: Figures, at: float) -> None:
        state = self._states[assertion.name]
        ok = assertion.holds(figures)
        if ok == state.ok:
            return
        was = state.ok
        state.ok, state.since = ok, at
        fields = {
            "assertion": assertion.name,
            "expr": assertion.source,
            "window_s": assertion.window,
            "critical": assertion.critical,
            "figures": {n: getattr(figures, n) for n in sorted(names(assertion.condition))},
        }
        if not ok:
            state.violations += 1
            _log.warning("assertion violated", extra=fields)
        elif was is not None:
            _log.info("assertion holds", extra=fields)

    async def run(self) -> None:
        """Tick every ``interval`` seconds until cancelled (a supervised task).

        Error handling: nothing is retried here; an error (a bug in a figure or an
        expression) ends the task for the supervisor to restart; the samples are kept.
        """
        while True:
            self.tick()
            await asyncio.sleep(self.interval)

    # -- reading -------------------------------------------------------------------------
    def critical_violations(self) -> list[str]:
        """Problems for /readyz: one per critical assertion that is violated."""
        return [
            f"assertion {a.name} violated ({a.source})"
            for a in self.assertions
            if a.critical and self._states[a.name].ok is False
        ]

    def statistics(self) -> dict[str, AssertionStatistics]:
        return {
            a.name: AssertionStatistics(
                ok=self._states[a.name].ok,
                critical=a.critical,
                violations=self._states[a.name].violations,
                expr=a.source,
                window_s=a.window,
            )
            for a in self.assertions
        }
