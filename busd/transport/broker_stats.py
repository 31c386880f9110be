"""The broker task's counters: ``BrokerStats``, plain ints written only by the broker task
(``busd.transport.broker``) and the objects it drives on its own path (``Subscriptions``,
``Answers``), read through ``statistics()`` as one frozen ``BrokerStatistics``
(``busd/statistics.py``).

The hot loop (``Broker._pump``) adds its per-message counts to locals and into these once per
wake-up; nothing here is called per message. The sequence numbers, the fences, the state
cache and the snapshot endpoint keep their own counters: ``statistics()`` reads them from
the objects the owning ``Broker`` registers here.
"""

from __future__ import annotations

from busd.kernel.fences import Fences
from busd.kernel.sequences import TopicSequences
from busd.kernel.state import StateCache
from busd.statistics import BrokerStatistics
from busd.transport.snapshots import Snapshots
from busd_protocol.codes import Code
from busd_protocol.histogram import Histogram


class BrokerStats:
    """Plain-int counters, written only by the broker task; read via ``statistics()``."""

    __slots__ = (
        "accepted",
        "batches",
        "bytes_accepted",
        "bytes_in",
        "fences",
        "frames_discarded",
        "latency",
        "overlong_messages",
        "publishers_cut",
        "received",
        "rejected",
        "replies_dropped",
        "replies_sent",
        "sequences",
        "snapshots",
        "state",
        "subscribe_total",
        "subscribers_cut",
        "subscriptions",
        "subscriptions_denied",
        "subscriptions_forbidden",
        "unsubscribe_total",
    )

    def __init__(self) -> None:
        self.received = 0
        self.accepted = 0
        self.bytes_in = 0
        self.bytes_accepted = 0
        self.rejected: dict[Code, int] = dict.fromkeys(Code, 0)
        self.replies_sent = 0
        self.replies_dropped = 0
        self.subscriptions = 0
        self.subscribe_total = 0
        self.unsubscribe_total = 0
        self.subscriptions_denied = 0  # never applied: over a cap (docs/protocol.md §5)
        self.subscriptions_forbidden = 0  # denied by the permissions file (docs/security.md)
        self.subscribers_cut = 0  # subscriber connections closed for asking too much
        self.batches = 0
        self.frames_discarded = 0  # frames past the third, read and dropped
        self.overlong_messages = 0  # messages too long to discard in one wake-up
        self.publishers_cut = 0  # publisher connections closed for not reading replies
        self.latency = Histogram()  # receive -> forward, seconds (upper bound: batch time)
        self.sequences: TopicSequences | None = None  # set by the Broker that owns these
        self.fences: Fences | None = None
        self.state: StateCache | None = None
        self.snapshots: Snapshots | None = None

    def statistics(self) -> BrokerStatistics:
        seqs = self.sequences.statistics() if self.sequences is not None else None
        fences = self.fences
        return BrokerStatistics(
            received=self.received,
            accepted=self.accepted,
            bytes_in=self.bytes_in,
            bytes_accepted=self.bytes_accepted,
            rejected=dict(self.rejected),
            replies_sent=self.replies_sent,
            replies_dropped=self.replies_dropped,
            subscriptions=self.subscriptions,
            subscribe_total=self.subscribe_total,
            unsubscribe_total=self.unsubscribe_total,
            subscriptions_denied=self.subscriptions_denied,
            subscriptions_forbidden=self.subscriptions_forbidden,
            subscribers_cut=self.subscribers_cut,
            batches=self.batches,
            frames_discarded=self.frames_discarded,
            overlong_messages=self.overlong_messages,
            publishers_cut=self.publishers_cut,
            latency=self.latency.snapshot(),
            epoch=seqs.epoch if seqs is not None else 0,
            sequence_topics=seqs.topics if seqs is not None else 0,
            sequence_topics_expired=seqs.expired if seqs is not None else 0,
            fences=len(fences) if fences is not None else 0,
            fenced=fences.refused if fences is not None else 0,
            state=self.state.statistics() if self.state is not None else None,
            snapshots=self.snapshots.statistics() if self.snapshots is not None else None,
        )
