"""Order through retries: a topic's later messages wait behind one that awaits a resend.

busd forwards in the order it accepts, so a message refused with a retryable code
(``not_ready``, ``rate_limited`` or ``disabled`` within the caller's retry deadline) and
sent again later would be overtaken by the later messages of its topic sent meanwhile.
``TopicHolds`` keeps, for each topic with such a message, a *hold*: the refused message and
every later message of that topic (refused ones as their answers come back, new ones as they
are published), in publish order. Once the head's retry is due it is sent alone; each
answer releases the next one, so at most one message of a held topic is in flight until
the hold is empty and the topic pipelines again. Why one at a time: under a rate limit,
several in flight could see the bucket refill between two of busd's batches and a later
one be accepted before an earlier one refused. The cost, only while a topic is refused:
its throughput falls to one message per round trip (docs/client.md "Order").

Plain state, no I/O and no clock reads: the single-broker strategy drives it.
"""

from __future__ import annotations

import bisect
import math

from busd_client.ledger import Pending

__all__ = ["TopicHolds"]


def _order(p: Pending) -> int:
    return p._order


class _Hold:
    __slots__ = ("busy", "due", "queue")

    def __init__(self) -> None:
        self.queue: list[Pending] = []  # publish order; none of them in flight
        self.due = 0.0  # the head may be sent from then on
        self.busy: Pending | None = None  # the one released: waiting to go, or in flight


class TopicHolds:
    """The holds of one publisher's topics, and the publish-order numbers they sort by."""

    def __init__(self) -> None:
        self.holds: dict[str, _Hold] = {}
        self._count = 0
        self.held_total = 0  # messages that ever waited behind an earlier one (a count)

    def number(self, p: Pending) -> None:
        """Give a new message its place in publish order."""
        self._count += 1
        p._order = self._count

    def holding(self, topic: str) -> bool:
        return topic in self.holds

    def hold(self, p: Pending, due: float = 0.0) -> bool:
        """``p`` waits in its topic's hold (created if need be) until released in order;
        its topic's head is not sent before ``due``. True when the hold is new."""
        h = self.holds.get(p.topic)
        new = h is None
        if h is None:
            h = self.holds[p.topic] = _Hold()
        if h.busy is p:
            h.busy = None
        bisect.insort(h.queue, p, key=_order)
        p._held = True
        self.held_total += 1
        h.due = max(h.due, due)
        return new

    def join(self, p: Pending) -> None:
        """A new message of a held topic: it waits behind every earlier one."""
        h = self.holds[p.topic]
        h.queue.append(p)  # the newest: publish order is kept by appending
        p._held = True
        self.held_total += 1

    def release(self, now: float) -> list[Pending]:
        """The messages to send now: each due hold's head, while none of its topic is busy.
        Holds left empty are dropped (their topic pipelines again)."""
        out: list[Pending] = []
        for topic, h in list(self.holds.items()):
            busy = h.busy
            if busy is not None:
                if not busy._done:
                    continue  # in flight: its answer comes first
                h.busy = None
            queue = h.queue
            while queue and queue[0]._done:
                queue.pop(0)
            if not queue:
                del self.holds[topic]
            elif h.due <= now:
                p = h.busy = queue.pop(0)
                p._held = False
                out.append(p)
        return out

    def late(self, now: float) -> list[Pending]:
        """Held messages whose deadline passed (or settled elsewhere), taken out."""
        out: list[Pending] = []
        for h in self.holds.values():
            if any(p._deadline <= now or p._done for p in h.queue):
                keep: list[Pending] = []
                for p in h.queue:
                    (out if p._deadline <= now or p._done else keep).append(p)
                h.queue = keep
        for p in out:
            p._held = False
        return out

    def next_wakeup(self) -> float | None:
        """The earliest head due or held deadline; None without holds."""
        t = math.inf
        for h in self.holds.values():
            if h.queue:
                if h.busy is None:
                    t = min(t, h.due)
                t = min(t, *(p._deadline for p in h.queue))
        return None if t == math.inf else t

    def take_all(self) -> list[Pending]:
        """Every held message, the holds emptied (on close)."""
        out = [p for h in self.holds.values() for p in h.queue]
        self.holds.clear()
        return out

    @property
    def count(self) -> int:
        """Messages waiting in holds now."""
        return sum(len(h.queue) for h in self.holds.values())
