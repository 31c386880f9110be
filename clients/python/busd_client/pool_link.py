"""One broker as a pool publisher sees it (Link), and a message of a pool publisher.

Plain state with no I/O and no decisions beyond bookkeeping; PoolCore (pool_core.py) decides.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any

from busd_client.inflight import Pending

__all__ = ["Link", "PoolPending"]

_ABANDONED_MAX = 65536  # messages sent elsewhere, remembered per broker for late answers


class PoolPending(Pending):
    """A message of a pool publisher: a Pending with an overall deadline and a broker."""

    __slots__ = ("_deadline", "_link", "broker")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._deadline = math.inf
        self._link: Link | None = None  # the broker it is in flight on, if any
        self.broker: str | None = None  # the endpoint of the broker that accepted it


class Link:
    """One broker as a pool publisher sees it: connection state, messages in flight, counts."""

    def __init__(self, index: int, endpoint: str) -> None:
        self.index = index
        self.endpoint = endpoint
        self.connected = False
        self.avoid_until = 0.0
        self.avoid_reason = ""
        self.strikes = 0  # attempt timeouts since the last answer: the avoidance backoff
        self.probing = False  # after avoidance: one message at a time until an answer
        self.next_seq = 1
        self.outstanding: dict[int, PoolPending] = {}
        # (attempt deadline, seq) in send order; deadlines grow with it (one constant
        # attempt_timeout). Entries of answered messages are dropped lazily at the head.
        self.deadlines: deque[tuple[float, int]] = deque()
        self.abandoned: OrderedDict[int, PoolPending] = OrderedDict()
        self.sent = self.accepted = self.rejected = self.timeouts = 0
        self.moved_away = self.disconnects = self.late_answers = 0

    def usable(self, now: float) -> bool:
        return (
            self.connected and now >= self.avoid_until and not (self.probing and self.outstanding)
        )

    def state(self, now: float) -> str:
        if not self.connected:
            return "down"
        if now < self.avoid_until:
            return f"avoided ({self.avoid_reason})"
        return "probing" if self.probing else "up"

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "state": self.state(now),
            "in_flight": len(self.outstanding),
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "attempt_timeouts": self.timeouts,
            "moved_away": self.moved_away,
            "disconnects": self.disconnects,
            "late_answers": self.late_answers,
        }

    def take(self, seq: int) -> tuple[PoolPending | None, bool]:
        """The message sent with ``seq`` and whether it had been given up on (late)."""
        p = self.outstanding.pop(seq, None)
        if p is not None:
            return p, False
        return self.abandoned.pop(seq, None), True

    def abandon(self, seq: int) -> PoolPending | None:
        p = self.outstanding.pop(seq, None)
        if p is not None:
            self.abandoned[seq] = p
            if len(self.abandoned) > _ABANDONED_MAX:
                self.abandoned.popitem(last=False)
        return p
