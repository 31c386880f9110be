"""Order fences: after a retryable refusal, a connection's later messages of that topic wait.

A pipelining publisher has many messages in flight. When busd refuses one of them with a
code the publisher resends on its own (``not_ready``, ``rate_limited``), the later
messages of the same topic already on their way would be judged on their own: a rate
bucket refilled between two batches, or a warm-up that ended, lets one of them through
before the refused one comes back, and the subscriber sees them out of order. So busd
*fences* the (connection, topic) pair: until the refused message itself comes back (the
same envelope bytes: a resend carries the same envelope and id), every other message of
that topic from that connection gets the same refusal, and the publisher resends them
behind it, in order (busd_client/holds.py). The fence is lifted when the refused message
is accepted, or ``retry_after_ms`` + ``GRACE`` seconds after the refusal if it never comes
back (a publisher that does not retry).

Bounded: at most ``cap`` fences; past it a new refusal sets none (counted in ``full``), so
order is then not kept for that topic. Pure: no I/O, time is passed in.
"""

from __future__ import annotations

from typing import Final

from busd_protocol.codes import Code, Reject

__all__ = ["FENCING", "GRACE", "Fences"]

# Refusals a publisher resends on its own: they set a fence. Not shutting_down (the
# connection is going away; a pool resends elsewhere) nor disabled (an operator's stop, often
# of one publisher name: a connection carrying several names must not see the others
# stopped; a publisher waiting on it keeps order by its own hold, busd_client/holds.py).
FENCING: Final = frozenset({Code.NOT_READY, Code.RATE_LIMITED})
GRACE = 0.5  # seconds a fence outlives the retry_after_ms it was set with
_CAP = 65536


class Fences:
    """The fences of every connection, keyed by (ROUTER identity, topic frame)."""

    __slots__ = ("_next_sweep", "cap", "full", "lifted", "refused", "set_total", "table")

    def __init__(self, cap: int = _CAP) -> None:
        # (connection, topic) -> (the refused envelope, until, the refusal). Never replaced:
        # the broker reads its emptiness once per batch, a dict's truth test, not a call.
        self.table: dict[tuple[bytes, bytes], tuple[bytes, float, Reject]] = {}
        self.cap = cap
        self.set_total = 0  # fences set
        self.lifted = 0  # fences lifted by their message's acceptance
        self.refused = 0  # messages refused because a fence held them back
        self.full = 0  # refusals that set no fence: the table was full
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self.table)

    def check(self, ident: bytes, topic_b: bytes, env_b: bytes, now: float) -> Reject | None:
        """The refusal for a message held back by a fence, or None (judge it as usual).
        Call only when the table is not empty."""
        key = (ident, topic_b)
        fence = self.table.get(key)
        if fence is None:
            return None
        env, until, reject = fence
        if now >= until:
            del self.table[key]
            return None
        if env_b == env:
            return None  # the refused message itself: judged again
        self.refused += 1
        return reject

    def refused_with(
        self, ident: bytes, topic_b: bytes, env_b: bytes, reject: Reject, now: float
    ) -> None:
        """A message was refused with ``reject``: fence its topic for its connection if the
        code is one a publisher resends (an existing fence keeps its message)."""
        if reject.code not in FENCING:
            return
        key = (ident, topic_b)
        fences = self.table
        fence = fences.get(key)
        if fence is not None and fence[0] != env_b:
            return  # held back by the fence: the fence's own message is still the one
        after = reject.extra.get("retry_after_ms", 0)
        until = now + (after / 1000.0 if isinstance(after, int) else 0.0) + GRACE
        if fence is None:
            if len(fences) >= self.cap:
                self.expire(now)
                if len(fences) >= self.cap:
                    self.full += 1
                    return
            self.set_total += 1
        fences[key] = (env_b, until, reject)

    def accepted(self, ident: bytes, topic_b: bytes) -> None:
        """A message was accepted: a fence on its (connection, topic) was its own."""
        if self.table.pop((ident, topic_b), None) is not None:
            self.lifted += 1

    def sweep(self, now: float) -> None:
        """Once per batch while fences exist: drop the expired ones, at most once a second
        (a fence of a connection that went away is never checked again)."""
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self.expire(now)

    def expire(self, now: float) -> int:
        """Drop fences past their time; return how many."""
        gone = [k for k, (_, until, _) in self.table.items() if now >= until]
        for k in gone:
            del self.table[k]
        return len(gone)
