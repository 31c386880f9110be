"""Per-topic sequence numbers for the delivery stamp (busd_protocol.stamps).

Bounded without a clock read per message: numbers live in two generations of dicts. Every
``idle`` seconds (``tick``, once per batch) the current generation becomes the previous one
and the old previous one is dropped; a topic found only in the previous generation moves
back to the current one. So a topic is forgotten after ``idle`` to 2 x ``idle`` seconds without a
message (its next message starts again at 1), and at most 2 x ``cap`` topics are held: a
generation reaching ``cap`` topics turns over early. No metric series per topic: only the
counts (``statistics``). Pure: no I/O; time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from busd_protocol.stamps import TOPIC_IDLE

__all__ = ["SequenceStatistics", "TopicSequences"]

_CAP = 131072


@dataclass(frozen=True)
class SequenceStatistics:
    epoch: int
    topics: int  # topics with a number now
    expired: int  # topics forgotten (idle, or pushed out past the cap)
    turnovers: int  # generations turned over early because of the cap


class TopicSequences:
    """The numbers of one broker epoch. ``current`` is read and written by the broker's
    forwarding loop directly (a dict lookup per message); ``revive`` handles a miss."""

    __slots__ = (
        "_next_turn",
        "cap",
        "current",
        "epoch",
        "expired",
        "idle",
        "previous",
        "turnovers",
    )

    def __init__(self, epoch: int, now: float, idle: float = TOPIC_IDLE, cap: int = _CAP):
        self.epoch = epoch
        self.idle = idle
        self.cap = cap
        self.current: dict[bytes, int] = {}
        self.previous: dict[bytes, int] = {}
        self._next_turn = now + idle
        self.expired = 0
        self.turnovers = 0

    def revive(self, topic_b: bytes) -> int:
        """The last number of a topic missing from ``current`` (0: none); after this call
        the caller writes the next number into ``self.current`` (re-read it: it may have
        turned over)."""
        n = self.previous.pop(topic_b, 0)
        if len(self.current) >= self.cap:
            self.turnovers += 1
            self._turn()
        return n

    def tick(self, now: float) -> None:
        """Once per batch: turn the generations over when ``idle`` has passed."""
        if now >= self._next_turn:
            self._next_turn = now + self.idle
            self._turn()

    def _turn(self) -> None:
        self.expired += len(self.previous)
        self.previous = self.current
        self.current = {}

    def statistics(self) -> SequenceStatistics:
        return SequenceStatistics(
            epoch=self.epoch,
            topics=len(self.current) + len(self.previous),
            expired=self.expired,
            turnovers=self.turnovers,
        )
