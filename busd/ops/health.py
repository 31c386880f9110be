"""Readiness: a list of named checks, each saying what (if anything) keeps busd from serving.

``/healthz`` answers 200 whenever the event loop can answer at all (a hung loop cannot, and
the systemd watchdog catches it). ``/readyz`` answers 200 only while every check passes:
sockets bound, the broker serving, not draining, and every critical assertion holding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Check = Callable[[], Iterable[str]]


class Health:
    def __init__(self) -> None:
        self._checks: list[Check] = []
        self.started = False  # set by the app's ready hook, after sockets are bound

    def add_check(self, check: Check) -> None:
        """``check()`` returns the problems it sees (empty when all is well); must be cheap."""
        self._checks.append(check)

    def problems(self) -> list[str]:
        found = [] if self.started else ["starting"]
        for check in self._checks:
            try:
                found.extend(check())
            except Exception as exc:  # a broken check must say so, not crash the endpoint
                found.append(f"check failed: {exc!r}")
        return found

    def ready(self) -> bool:
        return not self.problems()
