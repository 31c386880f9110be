"""Bookkeeping of messages awaiting a reply, shared by the sync and asyncio publishers.

No I/O here: the publishers read the socket and call ``on_reply``/``expire``, and send what
``due_retries`` hands back. Time is monotonic seconds, passed in.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from busd_client.errors import (
    BusError,
    ClosedError,
    Disabled,
    NotReady,
    PublishTimeout,
    RateLimited,
    rejection_from_reply,
)
from busd_protocol.replies import read_reply, seqs_in

__all__ = ["DISABLED_RETRY_INTERVAL", "InFlight", "Pending", "retry_due"]

# How often a message refused with `disabled` is retried when the caller asked to wait.
DISABLED_RETRY_INTERVAL = 0.25


class Pending:
    """One message from publish() until its fate is known; the base of the receipts."""

    __slots__ = (
        "_done",
        "_error",
        "_first_sent",
        "_reported",
        "_retry_until",
        "_seq",
        "_wait_disabled",
        "_waiter",
        "attempts",
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
        self._retry_until = retry_until
        self._wait_disabled = wait_disabled
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


class InFlight:
    """Messages sent and not yet answered, messages waiting to be retried, and failures."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.count = 0  # messages whose fate is not known yet (in flight or awaiting a retry)
        self._failed: list[Pending] = []
        self.settled = 0  # bumped on every settlement: waiters use it to see progress
        self._next_seq = 1
        self._outstanding: dict[int, Pending] = {}
        # (reply deadline, seq, message) in send order; deadlines grow with it because the
        # timeout is one constant. Entries of answered messages are dropped lazily at the head.
        self._deadlines: deque[tuple[float, int, Pending]] = deque()
        self._retries: list[tuple[float, int, Pending]] = []  # heap of (due, seq, message)
        self.bad_replies = 0

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def sent(self, p: Pending, now: float) -> None:
        """``p`` went out with sequence number ``next_seq``."""
        seq = self._next_seq
        self._next_seq = seq + 1
        p._seq = seq
        if p.attempts == 0:
            self.count += 1
            p._first_sent = now
        p.attempts += 1
        self._outstanding[seq] = p
        self._deadlines.append((now + self.timeout, seq, p))

    def settle(self, p: Pending, error: BusError | None) -> None:
        if p._done:
            return
        p._finish(error)
        self.count -= 1
        self.settled += 1
        if error is not None:
            self._failed.append(p)

    def on_reply(self, frame: bytes, now: float) -> None:
        """Apply one reply frame (docs/protocol.md §2). What breaks the protocol is counted
        in ``bad_replies`` and changes nothing; answers about messages no longer awaited
        (timed out) are ignored."""
        reply = read_reply(frame, self._next_seq - 1)
        self.bad_replies += reply.bad
        outstanding = self._outstanding
        for lo, hi in reply.acc:
            for seq in seqs_in(lo, hi, outstanding):
                p = outstanding.pop(seq, None)
                if p is not None:
                    self.settle(p, None)
        for seq, item in reply.rej:
            p = outstanding.pop(seq, None)
            if p is not None:
                self._rejected(p, rejection_from_reply(item), now)

    def _rejected(self, p: Pending, err: BusError, now: float) -> None:
        due = retry_due(err, p, now)
        if due is None and isinstance(err, NotReady):
            # A broker warming up after a restart: wait it out within the reply timeout.
            due = now + err.retry_after_ms / 1000.0
            if due > max(p._retry_until, p._first_sent + self.timeout):
                due = None
        if due is not None:
            p._error = err  # remembered: it is the error if the retry cannot be sent in time
            heapq.heappush(self._retries, (due, p._seq, p))
        else:
            self.settle(p, err)

    def expire(self, now: float) -> None:
        """Time out every message whose reply deadline has passed."""
        dq = self._deadlines
        outstanding = self._outstanding
        while dq:
            deadline, seq, p = dq[0]
            if p._done or p._seq != seq or seq not in outstanding:
                dq.popleft()
                continue
            if deadline > now:
                break
            dq.popleft()
            del outstanding[seq]
            self.settle(
                p,
                PublishTimeout(
                    f"no reply from busd within {self.timeout:g} s (fate unknown)",
                    sent=True,
                    seq=seq,
                ),
            )

    def due_retries(self, now: float) -> list[Pending]:
        """Messages whose rate-limit wait is over, to be sent again with a new seq."""
        heap = self._retries
        due: list[Pending] = []
        while heap and heap[0][0] <= now:
            p = heapq.heappop(heap)[2]
            if not p._done:
                due.append(p)
        return due

    def retry_later(self, p: Pending, now: float, delay: float) -> None:
        """A retry could not be sent now (socket full or down): try again, or give up."""
        if now + delay <= p._retry_until:
            heapq.heappush(self._retries, (now + delay, p._seq, p))
        else:
            self.settle(
                p,
                p._error
                or PublishTimeout("could not resend before the retry deadline", sent=False),
            )

    def next_wakeup(self) -> float | None:
        """The earliest monotonic time at which ``expire`` or ``due_retries`` has work."""
        t: float | None = None
        dq = self._deadlines
        while dq:
            deadline, seq, p = dq[0]
            if p._done or p._seq != seq:
                dq.popleft()
                continue
            t = deadline
            break
        if self._retries:
            due = self._retries[0][0]
            t = due if t is None else min(t, due)
        return t

    def take_failures(self) -> list[BusError]:
        """Errors of the messages failed since the last call, except those already raised
        to the caller by ``result()``."""
        failed, self._failed = self._failed, []
        return [p._error for p in failed if not p._reported and p._error is not None]

    def close(self) -> None:
        """Fail every message not settled yet with ClosedError."""
        pending = list(self._outstanding.values()) + [r[2] for r in self._retries]
        self._outstanding.clear()
        self._retries.clear()
        self._deadlines.clear()
        for p in pending:
            self.settle(p, ClosedError("closed before busd answered (fate unknown)"))
