"""What busd tells its publishers, and what it does to one that does not listen.

Each wake-up, ``Broker._pump`` gathers per publisher (routing id) the ranges of the seqs it
accepted and a list of rejections (``Replies``), then sends one reply frame per publisher for
the whole wake-up (docs/protocol.md §2). ``Answers`` holds the rest of that path:

- ``refused``: one refusal: counted by its code, answered (``replies.reject_entry``), told to
  the trust control when ``forbidden`` (``busdctl acl``), logged at a limited rate with who
  sent it unless it is routine (rate limits, warm-up, shutdown: counted only; ``internal`` is
  logged by ``Broker._judge``, with its traceback);
- ``overlong``: the refusals of a publish of more frames than a batch may have
  (``busd.transport.overlong``), logged once for the whole publish;
- ``send``: the reply frames, never blocking. A publisher whose replies pile up to
  ``reply_hwm`` is not reading them: it is noted (``peers.DeafPublishers``), its reply is
  dropped and counted, and ``cut`` closes its connection when its next message is read.

Nothing here is called per accepted message: ``refused`` is called once per refusal (the hot
loop keeps it in a local), ``send`` once per wake-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from busd.logs import RateLimitedLog
from busd.transport.broker_stats import BrokerStats
from busd.transport.ingress import culprit
from busd.transport.peers import DeafPublishers
from busd_protocol.codes import ROUTINE, Code, Reject
from busd_protocol.replies import encode_reply, reject_entry

_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
# Rejections not logged as "message rejected": routine refusals (rate limits, warm-up,
# shutdown) are counted only; an internal error is logged by Broker._judge, with its traceback.
_NOT_LOGGED = ROUTINE | {Code.INTERNAL}

# Per publisher (routing id) in one wake-up: accepted seqs as [first, last, first, last, ...]
# ranges, and the rejections (``replies.reject_entry``).
Replies = dict[bytes, tuple[list[int], list[dict[str, Any]]]]
# Told of every forbidden publish and subscription: (identity, what, topic or prefix).
OnDenied = Callable[[str, str, str], None]


class Answers:
    """Refusals, over-long answers, the reply frames and deaf publishers, for one broker."""

    def __init__(self, stats: BrokerStats, log: RateLimitedLog, *, max_batch: int, hwm: int):
        self.stats = stats
        self.deaf = DeafPublishers()  # publishers not reading their replies
        # The trust control keeps the last denials for `busdctl acl` (the broker sets it).
        self.on_denied: OnDenied | None = None
        self._log = log  # the broker's: per-message problems, bounded whatever the input
        self._max_batch = max_batch
        self._hwm = hwm

    def refused(
        self,
        rejects: list[dict[str, Any]],
        seq: int | None,
        reject: Reject,
        *,
        identity: str | None,
        topic_b: bytes | None,
        env_b: bytes | None,
    ) -> None:
        """Count, answer (in ``rejects``, a reply's list) and maybe log one refusal."""
        self.stats.rejected[reject.code] += 1
        rejects.append(reject_entry(seq, reject))
        if reject.code is Code.FORBIDDEN and self.on_denied is not None and topic_b is not None:
            self.on_denied(identity or "", "publish", topic_b.decode(errors="replace"))
        if reject.code not in _NOT_LOGGED:
            suppressed = self._log.allow(reject.code)
            if suppressed is not None:
                fields: dict[str, object] = {
                    "code": reject.code.value,
                    "reason": reject.reason,
                    "seq": seq,
                }
                fields.update(culprit(topic_b, env_b))
                self._log.write(logging.WARNING, "message rejected", suppressed, fields)

    def overlong(
        self, rejects: list[dict[str, Any]], refusals: list[tuple[int | None, Reject]]
    ) -> int:
        """Count and answer an over-long publish's refusals; log it once."""
        rejected = self.stats.rejected
        for seq, reject in refusals:
            rejected[reject.code] += 1
            rejects.append(reject_entry(seq, reject))
        seq, reject = refusals[0]
        self._log.warning(
            reject.code,
            "message rejected",
            code=reject.code.value,
            reason=reject.reason,
            seq=seq,
            messages=len(refusals),
        )
        return len(refusals)

    def cut(self, ident: bytes, frame: zmq.Frame) -> None:
        """Close the connection of a publisher noted as not reading its replies."""
        if self.deaf.cut(ident, frame):
            self.stats.publishers_cut += 1
            self._log.warning(
                "replies", "publisher disconnected: not reading its replies", limit=self._hwm
            )

    def send(self, router: zmq.Socket[bytes], replies: Replies, draining: bool) -> None:
        """One reply frame per publisher of this wake-up (``replies.encode_reply``)."""
        st = self.stats
        batch = self._max_batch
        for ident, (acc, rej) in replies.items():
            try:
                router.send(ident, _NOBLOCK | _SNDMORE)
                router.send(encode_reply(acc, rej, draining, batch), _NOBLOCK)
                st.replies_sent += 1
            except zmq.Again:
                # Not reading its replies: reply_hwm of them are queued. Its connection is
                # cut when its next message is read (``cut``).
                st.replies_dropped += 1
                self.deaf.not_reading(ident)
            except zmq.ZMQError:
                st.replies_dropped += 1  # publisher gone (EHOSTUNREACH)
