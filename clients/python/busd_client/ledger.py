"""What a publisher knows: each message from publish to its fate (Pending, the base of every
receipt), each broker as it sees it (Link), and the counts and failures of all its messages
(Ledger). Plain state, no I/O and no clock reads.

The strategies (single_broker.py, pool_strategy.py) move messages between links and settle
them here; the drivers read the counts and hand out the failures. ``retry_due`` is the one
rule for the retries a caller asked for (``retry_deadline``), used by both strategies.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from busd_client.errors import BusError, ClosedError, Disabled, RateLimited

__all__ = ["DISABLED_RETRY_INTERVAL", "Ledger", "Link", "Pending", "retry_due"]

# How often a message refused with `disabled` is retried when the caller asked to wait.
DISABLED_RETRY_INTERVAL = 0.25
_ABANDONED_MAX = 65536  # messages sent elsewhere, remembered per broker for late answers


class Pending:
    """One message from publish() until its fate is known; the base of the receipts."""

    __slots__ = (
        "_deadline",
        "_done",
        "_error",
        "_first_sent",
        "_held",
        "_link",
        "_order",
        "_reported",
        "_retry_until",
        "_seq",
        "_wait_disabled",
        "_waiter",
        "attempts",
        "broker",
        "envelope",
        "id",
        "topic",
        "topic_frame",
    )

    def __init__(  # noqa: PLR0917 (positional on the hot path)
        self,
        topic: str,
        topic_frame: bytes,
        envelope: bytes,
        id: str,
        retry_until: float,
        wait_disabled: bool,
    ) -> None:
        self.topic = topic
        self.id = id
        self.topic_frame = topic_frame
        self.envelope = envelope
        self.attempts = 0
        self._seq = 0
        self._first_sent = 0.0
        self._order = 0  # its place in publish order (holds.py)
        self._held = False  # waiting behind an earlier message of its topic (holds.py)
        self._retry_until = retry_until
        self._wait_disabled = wait_disabled
        # The time by which it must be sent (a single broker) or accepted (a pool); set by
        # the driver at publish, moved by the single broker for a retry.
        self._deadline = math.inf
        self._link: Link | None = None  # the broker it is in flight on, if any
        self.broker: str | None = None  # the endpoint of the broker that accepted it
        self._done = False
        self._reported = False  # the error was raised to the caller by result()
        self._error: BusError | None = None
        self._waiter: Any = None  # an asyncio future, created only when someone awaits

    @property
    def seq(self) -> int:
        """Sequence number of the latest attempt (0 before the first send)."""
        return self._seq

    def done(self) -> bool:
        """True once the message was accepted or failed."""
        return self._done

    @property
    def accepted(self) -> bool:
        return self._done and self._error is None

    @property
    def error(self) -> BusError | None:
        """The failure, once done; None while pending or when accepted."""
        return self._error

    def _finish(self, error: BusError | None) -> None:
        """Settled: accepted (``error`` None) or failed. Wakes an awaiting caller."""
        self._done = True
        self.envelope = b""  # the bytes are no longer needed; the caller may keep the receipt
        self._error = error
        self._link = None
        if error is not None:
            error.id, error.topic = self.id, self.topic
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        state = (
            "pending"
            if not self._done
            else "accepted"
            if self._error is None
            else f"failed: {self._error!r}"
        )
        return f"<{type(self).__name__} id={self.id} topic={self.topic} {state}>"


def retry_due(err: BusError, p: Pending, now: float) -> float | None:
    """When a refused message is sent again because its caller asked (``retry_deadline``):
    after ``retry_after_ms`` for ``rate_limited``, every 250 ms for ``disabled`` when told to
    wait; None for other refusals or when that falls past the message's retry deadline."""
    if isinstance(err, RateLimited):
        due = now + err.retry_after_ms / 1000.0
    elif isinstance(err, Disabled) and p._wait_disabled:
        due = now + DISABLED_RETRY_INTERVAL
    else:
        return None
    return due if due <= p._retry_until else None


class Link:
    """One broker as a publisher sees it: connection state, messages in flight, counts.

    ``connected``: the pool learns it from the socket monitor; a single broker assumes it
    until a send finds the socket unwritable, and again once the socket is writable.
    """

    def __init__(self, index: int, endpoint: str) -> None:
        self.index = index  # the position of its socket in the driver's sockets
        self.endpoint = endpoint
        self.connected = False
        self.avoid_until = 0.0
        self.avoid_reason = ""
        self.strikes = 0  # attempt timeouts since the last answer: the avoidance backoff
        self.probing = False  # after avoidance: one message at a time until an answer
        self.next_seq = 1
        # Messages this broker takes in one batch: 1 until a reply of its says more
        # (docs/protocol.md §2 ``batch``; a busd without batches never does).
        self.batch = 1
        self.outstanding: dict[int, Pending] = {}
        # (attempt deadline, seq) in send order; deadlines grow with it (one constant
        # attempt_timeout). Entries of answered messages are dropped lazily at the head.
        self.deadlines: deque[tuple[float, int]] = deque()
        self.abandoned: OrderedDict[int, Pending] = OrderedDict()
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

    def take(self, seq: int) -> tuple[Pending | None, bool]:
        """The message sent with ``seq`` and whether it had been given up on (late)."""
        p = self.outstanding.pop(seq, None)
        if p is not None:
            return p, False
        return self.abandoned.pop(seq, None), True

    def abandon(self, seq: int) -> Pending | None:
        p = self.outstanding.pop(seq, None)
        if p is not None:
            self.abandoned[seq] = p
            if len(self.abandoned) > _ABANDONED_MAX:
                self.abandoned.popitem(last=False)
        return p


class Ledger:
    """The counts of a publisher's messages and the failures not yet handed out."""

    __slots__ = ("_failed", "bad_replies", "count", "settled")

    def __init__(self) -> None:
        self.count = 0  # messages whose fate is not known yet
        self.settled = 0  # bumped on every settlement: waiters use it to see progress
        self.bad_replies = 0  # reply frames that broke the protocol (ignored)
        self._failed: list[Pending] = []

    def settle(self, p: Pending, error: BusError | None) -> None:
        """``p`` is accepted (``error`` None) or failed; a second settlement is ignored."""
        if p._done:
            return
        p._finish(error)
        self.count -= 1
        self.settled += 1
        if error is not None:
            self._failed.append(p)

    def close(self, unsettled: Iterable[Pending], why: str) -> None:
        """Fail every message of ``unsettled`` not settled yet with ClosedError(``why``)."""
        for p in unsettled:
            self.settle(p, ClosedError(why))

    def take_failures(self) -> list[BusError]:
        """Errors of the messages failed since the last call, except those already raised
        to the caller (by ``result()`` or ``publish``)."""
        failed, self._failed = self._failed, []
        return [p._error for p in failed if not p._reported and p._error is not None]
