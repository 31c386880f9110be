"""The pool strategy: which broker of a pool gets a message, and what to do when one fails.

No I/O and no clock reads (core.py says how a driver uses a strategy), so the sync and
asyncio pool publishers share it and tests can drive it step by step. The drivers own the
sockets: they feed in replies and connection events (from socket monitors), and send what
``add`` and ``next_send`` name.

The rules (docs/pool.md):
- each message goes to one broker, chosen round-robin among the usable ones; a broker is
  usable while its connection is up and it is not being avoided;
- a message not answered within ``attempt_timeout``, or on a connection that was lost, is
  sent again, same envelope and id, to another broker (the broker is avoided for a while,
  doubling up to ``avoid_max``, then probed with one message at a time);
- ``not_ready`` and ``shutting_down`` are about the broker, not the message: it is avoided
  and the message goes elsewhere at once; every other rejection is final (``rate_limited``
  and ``disabled`` are retried only within the caller's retry deadline, like a publisher's);
- a message is accepted when any broker accepted it, even an answer that arrives after the
  message was sent elsewhere; it fails only at its deadline (``timeout``; none: never);
- batches (core.py "Natural batching"): what waits goes out together to one broker (the
  round-robin moves on per batch), at most ``max_batch`` and that broker's ``batch`` from
  its latest reply; a new connection starts again with single messages; a broker being
  probed gets one message at a time.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import Any

from busd_client.core import PublishCore
from busd_client.errors import NotReady, PublishTimeout, Rejected, rejection_from_reply
from busd_client.ledger import Ledger, Link, Pending, retry_due
from busd_protocol.replies import read_reply, seqs_in

__all__ = ["PoolStrategy", "pool_core", "pool_endpoints"]


def pool_endpoints(endpoints: Sequence[str] | str) -> list[str]:
    """The brokers' endpoints as a list: a sequence, or one comma-separated string."""
    if isinstance(endpoints, str):
        endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
    if not endpoints:
        raise ValueError("a pool needs at least one broker endpoint")
    return list(endpoints)


def pool_core(
    endpoints: Sequence[str], timeout: float | None, attempt_timeout: float, **settings: Any
) -> tuple[PublishCore, PoolStrategy]:
    """A publisher's core over a PoolStrategy to ``endpoints`` (``timeout`` None: messages
    wait for ever), and that strategy; ``settings`` are PublishCore's."""
    strategy = PoolStrategy(Ledger(), pool_endpoints(endpoints), attempt_timeout)
    timeout = math.inf if timeout is None else timeout
    return PublishCore(strategy, timeout=timeout, **settings), strategy


# A send that found a broker's socket full (or not yet attached) avoids it this long.
_FULL_AVOID = 0.02
_SILENT = "no answer in time"


class PoolStrategy:
    """The brokers of a pool, the messages waiting for one, and the timers of both."""

    monitored = True  # the socket monitor reports connections made and lost
    send_in_publish = False  # publish queues the message for the pool
    max_batch = 1  # PublishCore sets the publisher's
    linger = 0.0

    def __init__(
        self,
        ledger: Ledger,
        endpoints: Sequence[str],
        attempt_timeout: float,
        avoid_base: float = 0.25,
        avoid_max: float = 8.0,
    ) -> None:
        if not endpoints:
            raise ValueError("a pool needs at least one broker endpoint")
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("each broker endpoint may appear only once")
        if not attempt_timeout > 0:
            raise ValueError("attempt_timeout must be > 0 seconds")
        self.ledger = ledger
        self.links = [Link(i, e) for i, e in enumerate(endpoints)]
        self.attempt_timeout = attempt_timeout
        self.avoid_base = avoid_base
        self.avoid_max = avoid_max
        self.waiting: deque[Pending] = deque()  # to be sent (again), oldest first
        self._deadlines: deque[tuple[float, Pending]] = deque()  # in publish order
        self._retries: list[tuple[float, int, Pending]] = []
        self._tie = itertools.count()
        self._rr = 0
        self._linger_until = -math.inf  # a lingering batch goes out by then at the latest
        self.resent = 0  # sends of a message to a broker after another one failed it
        self.late_accepts = 0  # accepted by an answer that came after the message moved on

    # -- what a driver calls -------------------------------------------------------------------

    def add(self, p: Pending, now: float) -> Link | None:
        """A new message: to a usable broker at once when none is waiting, else it waits."""
        self._count(p)
        if not self.waiting:
            link = self.pick(now)
            if link is not None:
                if not self.linger or link.batch == 1:
                    return link
                self._linger_until = now + self.linger  # the first of a batch that may fill
        self.waiting.append(p)
        return None

    def enqueue(self, p: Pending, now: float) -> None:
        self._count(p)
        self.waiting.append(p)

    def _count(self, p: Pending) -> None:
        self.ledger.count += 1
        if p._deadline != math.inf:
            dq = self._deadlines
            if dq and p._deadline < dq[-1][0]:
                p._deadline = dq[-1][0]  # kept in order: a shorter timeout waits a bit more
            dq.append((p._deadline, p))

    def pick(self, now: float) -> Link | None:
        """The next usable broker, round-robin; None when none is usable now."""
        links = self.links
        n = len(links)
        for k in range(n):
            link = links[(self._rr + k) % n]
            if link.usable(now):
                self._rr = (link.index + 1) % n
                return link
        return None

    def next_send(self, now: float) -> tuple[Link, Pending] | None:
        """The oldest waiting message and the next usable broker; None if either is missing."""
        waiting = self.waiting
        while waiting:
            p = waiting[0]
            if p._done or p._link is not None:
                waiting.popleft()
                continue
            link = self.pick(now)
            return None if link is None else (link, p)
        return None

    def next_batch(self, now: float) -> tuple[Link, list[Pending]] | None:
        """The oldest waiting messages, as many as the next usable broker takes at once."""
        waiting = self.waiting
        while waiting and (waiting[0]._done or waiting[0]._link is not None):
            waiting.popleft()
        if not waiting:
            return None
        # Lingering: others may still join, unless no usable broker could take more anyway.
        if (
            now < self._linger_until
            and len(waiting) < self.max_batch
            and any(link.batch > len(waiting) for link in self.links if link.usable(now))
        ):
            return None
        link = self.pick(now)
        if link is None:
            return None
        limit = 1 if link.probing else min(self.max_batch, link.batch)
        if limit == 1:
            return link, [waiting[0]]
        batch: list[Pending] = []
        for p in islice(waiting, limit):
            if p._done or p._link is not None:
                break  # settled or in flight elsewhere: popped once it reaches the head
            batch.append(p)
        return link, batch

    def hurry(self) -> None:
        self._linger_until = -math.inf

    def sent(self, link: Link, p: Pending, now: float) -> None:
        seq = link.next_seq
        link.next_seq = seq + 1
        link.outstanding[seq] = p
        link.sent += 1
        link.deadlines.append((now + self.attempt_timeout, seq))
        if p.attempts:
            self.resent += 1
        p.attempts += 1
        p._seq = seq
        p._link = link
        waiting = self.waiting
        if waiting and waiting[0] is p:
            waiting.popleft()

    def blocked(self, link: Link, p: Pending, now: float) -> None:
        """The socket was full (or not attached yet): avoid it briefly; ``p`` waits first."""
        self._avoid(link, now, _FULL_AVOID, "socket full")
        waiting = self.waiting
        if not waiting or waiting[0] is not p:
            waiting.appendleft(p)

    def on_connected(self, link: Link) -> None:
        """A (new) connection is up: a restarted broker starts with a clean slate."""
        link.connected = True
        link.avoid_until = 0.0
        link.strikes = 0
        link.probing = False

    def on_disconnected(self, link: Link) -> None:
        """The connection was lost: whatever was in flight on it goes to another broker."""
        link.connected = False
        link.disconnects += 1
        link.batch = 1  # the next connection may reach another busd: single until it says
        self._move_all(link)

    def on_reply(self, link: Link, frame: bytes, now: float) -> None:
        """Apply one reply frame from ``link`` (docs/protocol.md §2).

        What breaks the protocol is counted in ``bad_replies`` and changes nothing (see
        replies.py); so is an answer naming no message this link sent and still knows of.
        """
        reply = read_reply(frame, link.next_seq - 1)
        bad = reply.bad
        link.batch = reply.batch or 1  # each reply says it: a replaced busd may not batch
        if reply.draining:  # shutting down: it answers, but send no more
            self._avoid(link, now, self.avoid_max, "draining")
        alive = False
        for lo, hi in reply.acc:
            found = False
            for seq in seqs_in(lo, hi, link.outstanding, link.abandoned):
                p, late = link.take(seq)
                if p is not None:
                    if not alive:
                        alive = self._alive(link, now)
                    found = True
                    self._accepted(link, p, late)
            bad += not found  # answers no message of ours: answered twice, or never sent
        for seq, item in reply.rej:
            p, late = link.take(seq)
            if p is None:
                bad += 1
                continue
            if not alive:
                alive = self._alive(link, now)
            if late or p._done:
                continue  # a late refusal: the message is already in other hands
            self._rejected(link, p, rejection_from_reply(item), now)
        self.ledger.bad_replies += bad

    def _alive(self, link: Link, now: float) -> bool:
        """An answer about one of its messages shows the broker alive: a silence-based
        avoidance ends (after a network blip it is used again at once, not after the
        backoff)."""
        link.strikes = 0
        link.probing = False
        if link.avoid_reason == _SILENT and link.avoid_until > now:
            link.avoid_until = now
        return True

    def expire(self, now: float) -> None:
        """Move unanswered messages on, fail messages past their deadline, queue retries."""
        for link in self.links:
            dl = link.deadlines
            outstanding = link.outstanding
            moved = []
            # Due entries, and answered ones at the head: the queue stays as short as what
            # is in flight, not as long as all that was sent in the last attempt_timeout.
            while dl and (dl[0][0] <= now or dl[0][1] not in outstanding):
                seq = dl.popleft()[1]
                p = link.abandon(seq)
                if p is None or p._done:
                    continue
                link.timeouts += 1
                link.moved_away += 1
                p._link = None
                moved.append(p)
            self.waiting.extendleft(reversed(moved))  # ahead of newer ones, in send order
            if moved and now >= link.avoid_until:
                # One strike per silence: the messages sent before it was noticed time out
                # one after another and must not push the backoff to its maximum at once.
                link.strikes += 1
                self._avoid(
                    link,
                    now,
                    min(self.avoid_max, self.avoid_base * 2 ** (link.strikes - 1)),
                    _SILENT,
                )
                link.probing = True
        dq = self._deadlines
        # Due entries, and settled ones at the head: without this a publisher that never
        # waits would hold an entry per message of the last `timeout` seconds (30 s).
        while dq and (dq[0][0] <= now or dq[0][1]._done):
            p = dq.popleft()[1]
            if p._done:
                continue
            if p._link is not None:
                p._link.abandon(p._seq)
            self.ledger.settle(
                p,
                PublishTimeout(
                    "no broker accepted it before its deadline"
                    + (" (fate unknown)" if p.attempts else "; it was never sent"),
                    sent=bool(p.attempts),
                ),
            )
        retries = self._retries
        while retries and retries[0][0] <= now:
            p = heapq.heappop(retries)[2]
            if not p._done:
                self.waiting.append(p)

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time ``expire`` or ``next_send`` may have work (avoidance ending)."""
        times = []
        for link in self.links:
            dl = link.deadlines
            while dl and dl[0][1] not in link.outstanding:
                dl.popleft()  # answered
            if dl:
                times.append(dl[0][0])
        dq = self._deadlines
        while dq and dq[0][1]._done:
            dq.popleft()
        if dq:
            times.append(dq[0][0])
        if self._retries:
            times.append(self._retries[0][0])
        if self.waiting:
            times.extend(
                link.avoid_until for link in self.links if link.connected and link.avoid_until > now
            )
            if self._linger_until > now:
                times.append(self._linger_until)
        return min(times) if times else None

    def close(self) -> None:
        """Fail every message not settled yet with ClosedError."""
        pending = [p for link in self.links for p in link.outstanding.values()]
        pending += list(self.waiting) + [r[2] for r in self._retries]
        for link in self.links:
            link.outstanding.clear()
            link.deadlines.clear()
        self.waiting.clear()
        self._retries.clear()
        self._deadlines.clear()
        self.ledger.close(pending, "closed before a broker accepted it (fate unknown)")

    def brokers(self, now: float) -> list[dict[str, Any]]:
        """Per broker: endpoint, state (up, down, avoided (why), probing) and counts."""
        return [link.snapshot(now) for link in self.links]

    def statistics(self, now: float) -> dict[str, Any]:
        """The pool's counts, and ``brokers``."""
        return {
            "pending": self.ledger.count,
            "waiting": len(self.waiting),
            "resent": self.resent,
            "late_accepts": self.late_accepts,
            "bad_replies": self.ledger.bad_replies,
            "brokers": self.brokers(now),
        }

    # -- internals --------------------------------------------------------------------------

    def _avoid(self, link: Link, now: float, seconds: float, why: str) -> None:
        if now + seconds > link.avoid_until:
            link.avoid_until = now + seconds
            link.avoid_reason = why

    def _move_all(self, link: Link) -> None:
        moved = [
            p
            for seq in sorted(link.outstanding)
            if (p := link.abandon(seq)) is not None and not p._done
        ]
        link.deadlines.clear()
        for p in reversed(moved):
            p._link = None
            self.waiting.appendleft(p)
        link.moved_away += len(moved)

    def _accepted(self, link: Link, p: Pending, late: bool) -> None:
        if late:
            link.late_answers += 1
            if p._done:
                return  # another broker accepted it first: counted there
            self.late_accepts += 1
            other = p._link
            if other is not None:  # in flight elsewhere too: that answer no longer matters
                other.abandon(p._seq)
        link.accepted += 1
        p.broker = link.endpoint
        self.ledger.settle(p, None)

    def _rejected(self, link: Link, p: Pending, err: Rejected, now: float) -> None:
        p._link = None
        if isinstance(err, NotReady) or err.code == "shutting_down":
            # A floor, so a broker answering retry_after_ms 0 is not asked again at once.
            wait = (
                max(self.avoid_base, err.retry_after_ms / 1000.0)
                if isinstance(err, NotReady)
                else self.avoid_max
            )
            self._avoid(link, now, wait, err.code)
            link.moved_away += 1
            self.waiting.appendleft(p)
            return
        link.rejected += 1
        due = retry_due(err, p, now)
        if due is not None and due < p._deadline:
            p._error = err
            heapq.heappush(self._retries, (due, next(self._tie), p))
        else:
            self.ledger.settle(p, err)
