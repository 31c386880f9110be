"""The warm-up: for ``warmup`` seconds after binding, every publish is refused ``not_ready``.

A restarted broker of a pool would otherwise accept messages before its subscribers have
reconnected (their reconnect interval is up to a second), and those messages would reach
nobody. Refusing them sends them to the pool's other brokers instead; the refusal says how
long is left (``retry_after_ms``). A single broker's publishers retry after it.

The broker asks once per wake-up (``Warmup.refusal``); once the warm-up is over that is one
comparison, without reading the clock.
"""

from __future__ import annotations

from collections.abc import Callable

from busd_protocol.codes import Code, Reject


class Warmup:
    """When the warm-up ends, and the refusal for the publishes read before then."""

    __slots__ = ("_clock", "_until")

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock  # monotonic seconds (the broker's)
        self._until = 0.0  # monotonic; 0.0: not started, or over

    def start(self, seconds: float) -> None:
        """Begin (at binding): publishes are refused for ``seconds`` from now."""
        self._until = self._clock() + seconds

    def left(self) -> float:
        """Seconds of warm-up left (0.0 once over)."""
        return max(0.0, self._until - self._clock())

    def refusal(self) -> Reject | None:
        """``not_ready`` while warming up, with the milliseconds left; None once over."""
        if self._until == 0.0:
            return None
        left = self.left()
        if not left:
            self._until = 0.0  # over: later wake-ups skip the clock read
            return None
        ms = max(1, round(left * 1000))
        return Reject(
            Code.NOT_READY,
            f"busd is warming up for {ms} ms more: subscribers "
            "are reconnecting; retry then, or publish to another broker",
            {"retry_after_ms": ms},
        )
