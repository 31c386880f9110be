"""The single-broker strategy: every message to one busd, one reply deadline per send.

No I/O and no clock reads (core.py says how a driver uses a strategy). The rules
(docs/client.md):
- a message goes out at once when the socket takes it; publish returns only once it did
  (``send_in_publish``). A socket that would not take it (IMMEDIATE=1: no connection, or
  full) holds it, and every later one, until the driver finds the socket writable again;
  not sent within ``timeout`` of publish, it fails ``PublishTimeout(sent=False)``;
- each send has a reply deadline of ``timeout``: unanswered, the message fails
  ``PublishTimeout(sent=True)`` (fate unknown) and a later answer about it is ignored;
- ``rate_limited`` (and ``disabled`` when asked to wait) is resent, same envelope and id,
  new sequence number, within the caller's retry deadline (``ledger.retry_due``);
  ``not_ready`` (a busd warming up) within ``timeout`` of the first send too; any other
  refusal is final. A resend that cannot go out before its deadline fails with the refusal;
- order through retries (holds.py): a message awaiting a resend holds back every later
  message of its topic; they go after it, one at a time, in publish order. A held message
  counts in the window; publish returns once it is held;
- batches (core.py "Natural batching"): what waits goes out together, oldest first, at
  most ``max_batch`` and the broker's ``batch`` from its latest reply (a reply without it:
  an older busd, single messages again).
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice
from typing import Any

from busd_client.core import PublishCore
from busd_client.errors import BusError, NotReady, PublishTimeout, rejection_from_reply
from busd_client.holds import TopicHolds
from busd_client.ledger import Ledger, Link, Pending, retry_due
from busd_protocol.replies import read_reply, seqs_in

__all__ = ["SingleBroker", "single_broker_core"]


def single_broker_core(endpoint: str, timeout: float, **settings: Any) -> PublishCore:
    """A publisher's core over a SingleBroker to ``endpoint``; ``settings`` are
    PublishCore's (name, window, retry_deadline, wait_when_disabled, schemas)."""
    return PublishCore(
        SingleBroker(Ledger(), endpoint, float(timeout)), timeout=timeout, **settings
    )


class SingleBroker:
    """Messages sent to one broker and not yet answered, messages waiting to be (re)sent,
    and their deadlines."""

    monitored = False  # no socket monitor: writability says whether the socket takes more
    send_in_publish = True
    max_batch = 1  # PublishCore sets the publisher's
    linger = 0.0

    def __init__(self, ledger: Ledger, endpoint: str, timeout: float) -> None:
        self.ledger = ledger
        self.timeout = timeout
        self.link = Link(0, endpoint)
        self.link.connected = True  # until a send finds the socket unwritable
        self.links = [self.link]
        self.waiting: deque[Pending] = deque()
        # (reply deadline, seq, message) in send order; deadlines grow with it because the
        # timeout is one constant. Entries of answered messages are dropped lazily at the head.
        self._deadlines: deque[tuple[float, int, Pending]] = deque()
        self.holds = TopicHolds()  # messages awaiting a resend, and those behind them
        self._linger_until = -math.inf  # a lingering batch goes out by then at the latest

    # -- what a driver calls -------------------------------------------------------------------

    def add(self, p: Pending, now: float) -> Link | None:
        self.ledger.count += 1
        holds = self.holds
        holds.number(p)
        if holds.holds and p.topic in holds.holds:
            holds.join(p)  # behind an earlier message of its topic awaiting a resend
            return None
        waiting = self.waiting
        if waiting or not self.link.connected:
            waiting.append(p)  # behind the ones already waiting: order is kept
            return None
        if self.linger and self.link.batch > 1:
            self._linger_until = now + self.linger  # the first of a batch that may fill
            waiting.append(p)
            return None
        return self.link

    def enqueue(self, p: Pending, now: float) -> None:
        self.ledger.count += 1
        holds = self.holds
        holds.number(p)
        if holds.holds and holds.holding(p.topic):
            holds.join(p)
        else:
            self.waiting.append(p)

    def next_send(self, now: float) -> tuple[Link, Pending] | None:
        waiting = self.waiting
        while waiting and waiting[0]._done:
            waiting.popleft()
        if waiting and self.link.connected:
            return self.link, waiting[0]
        return None

    def next_batch(self, now: float) -> tuple[Link, list[Pending]] | None:
        waiting = self.waiting
        while waiting and waiting[0]._done:
            waiting.popleft()
        link = self.link
        if not waiting or not link.connected:
            return None
        limit = min(self.max_batch, link.batch)
        if limit == 1 or len(waiting) == 1:
            if self.linger and limit > 1 and now < self._linger_until:
                return None  # one lingering message: others may join it
            return link, [waiting[0]]
        if len(waiting) < limit and now < self._linger_until:
            return None
        batch: list[Pending] = []
        for p in islice(waiting, limit):
            if p._done:
                break  # settled while waiting: popped once it reaches the head
            batch.append(p)
        return link, batch

    def hurry(self) -> None:
        self._linger_until = -math.inf

    def sent(self, link: Link, p: Pending, now: float) -> None:
        seq = link.next_seq
        link.next_seq = seq + 1
        p._seq = seq
        if not p.attempts:
            p._first_sent = now
        p.attempts += 1
        link.outstanding[seq] = p
        self._deadlines.append((now + self.timeout, seq, p))
        waiting = self.waiting
        if waiting and waiting[0] is p:
            waiting.popleft()

    def blocked(self, link: Link, p: Pending, now: float) -> None:
        link.connected = False  # the driver watches for the socket to become writable
        waiting = self.waiting
        if not waiting or waiting[0] is not p:
            waiting.appendleft(p)

    def on_connected(self, link: Link) -> None:
        """The socket is writable again."""
        link.connected = True

    def on_disconnected(self, link: Link) -> None:
        link.connected = False

    def on_reply(self, link: Link, frame: bytes, now: float) -> None:
        """Apply one reply frame (docs/protocol.md §2). What breaks the protocol is counted
        in ``bad_replies`` and changes nothing; answers about messages no longer awaited
        (timed out) are ignored."""
        reply = read_reply(frame, link.next_seq - 1)
        ledger = self.ledger
        ledger.bad_replies += reply.bad
        link.batch = reply.batch or 1  # each reply says it: a replaced busd may not batch
        outstanding = link.outstanding
        for lo, hi in reply.acc:
            for seq in seqs_in(lo, hi, outstanding):
                p = outstanding.pop(seq, None)
                if p is not None:
                    ledger.settle(p, None)
        for seq, item in reply.rej:
            p = outstanding.pop(seq, None)
            if p is not None:
                self._rejected(p, rejection_from_reply(item), now)

    def expire(self, now: float) -> None:
        """Time out unanswered sends, queue due resends, fail what was not sent in time."""
        dq = self._deadlines
        outstanding = self.link.outstanding
        settle = self.ledger.settle
        while dq:
            deadline, seq, p = dq[0]
            if p._done or p._seq != seq or seq not in outstanding:
                dq.popleft()
                continue
            if deadline > now:
                break
            dq.popleft()
            del outstanding[seq]
            settle(
                p,
                PublishTimeout(
                    f"no reply from busd within {self.timeout:g} s (fate unknown)",
                    sent=True,
                    seq=seq,
                ),
            )
        holds = self.holds
        if holds.holds:
            for p in holds.late(now):
                settle(p, p._error or self._unsent(p))
            self.waiting.extend(holds.release(now))
        if self.waiting:
            late = [p for p in self.waiting if p._deadline <= now or p._done]
            for p in late:
                self.waiting.remove(p)
                settle(p, p._error or self._unsent(p))

    def next_wakeup(self, now: float) -> float | None:
        t: float | None = None
        dq = self._deadlines
        while dq:
            deadline, seq, p = dq[0]
            if p._done or p._seq != seq:
                dq.popleft()
                continue
            t = deadline
            break
        if self.holds.holds:
            due = self.holds.next_wakeup()
            if due is not None:
                t = due if t is None else min(t, due)
        if self.waiting:
            due = min(p._deadline for p in self.waiting)
            if self._linger_until > now:
                due = min(due, self._linger_until)
            t = due if t is None else min(t, due)
        return t

    def close(self) -> None:
        pending = list(self.link.outstanding.values()) + self.holds.take_all()
        pending += self.waiting
        self.link.outstanding.clear()
        self._deadlines.clear()
        self.waiting.clear()
        self.ledger.close(pending, "closed before busd answered (fate unknown)")

    # -- internals ---------------------------------------------------------------------------

    def _rejected(self, p: Pending, err: BusError, now: float) -> None:
        due = retry_due(err, p, now)
        until = p._retry_until
        if due is None and isinstance(err, NotReady):
            # A broker warming up after a restart: wait it out within the reply timeout.
            due = now + err.retry_after_ms / 1000.0
            until = max(p._retry_until, p._first_sent + self.timeout)
            if due > until:
                due = None
        if due is not None:
            p._error = err  # remembered: it is the error if the resend cannot go in time
            p._deadline = until  # the resend must go out by then
            if self.holds.hold(p, due):
                # A new hold: what of its topic waits unsent joins it, in publish order.
                topic = p.topic
                behind = [q for q in self.waiting if q.topic == topic]
                for q in behind:
                    self.waiting.remove(q)
                    self.holds.hold(q)
        else:
            self.ledger.settle(p, err)

    def _unsent(self, p: Pending) -> PublishTimeout:
        if p.attempts:
            return PublishTimeout("could not resend before the retry deadline", sent=False)
        return PublishTimeout(
            f"not sent within {self.timeout:g} s: no connection to busd accepted the message",
            sent=False,
        )
