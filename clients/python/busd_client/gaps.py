"""Gap detection from busd's delivery stamps (busd_protocol.stamps): every loss visible.

``GapTracker`` keeps, per stream (broker epoch) and topic, the last sequence number seen.
The first message of a topic in an epoch only sets the baseline: a subscriber that joins
late is not told about what came before it. Then:
- the next number: nothing to say;
- a higher one: a ``Gap`` of kind ``"gap"``: ``got - expected`` messages of that topic were
  lost on the way to this subscriber (its queue was full, a reconnect, ...);
- back at 1 in the same epoch: busd forgot the idle topic; a new baseline (``resets``);
- a new epoch: busd restarted; ``Gap`` of kind ``"epoch"`` (what was in flight then is
  unknowable), reported once per epoch, with the one it replaces when there is one.

A pool subscriber has one socket for all brokers; each broker's epoch names its stream, so
numbers are tracked per epoch and never compared across brokers: a copy of a message from
broker B does not fill (nor cause) a gap on broker A's stream; a message dropped by dedup
still advances its own broker's stream. In a pool a new epoch counts as a restart once
as many epochs as brokers are known (one of them was replaced: the one silent longest).

Bounded: at most ``cap`` (epoch, topic) pairs; past it the table is cleared (new baselines,
never a false gap). Plain state; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from busd_protocol.stamps import STAMP_LEN, unpack_stamp

__all__ = ["Gap", "GapTracker"]

_CAP = 65536


@dataclass(frozen=True, slots=True)
class Gap:
    """A loss this subscriber can see. ``kind`` ``"gap"``: messages ``expected`` ..
    ``got - 1`` of ``topic`` in ``epoch`` never arrived. ``"epoch"``: busd restarted
    (``previous`` is the epoch it replaced, None if unknown); ``expected``/``got`` are 0 and
    the first sequence number seen in the new epoch."""

    kind: Literal["gap", "epoch"]
    topic: str
    epoch: int
    expected: int
    got: int
    previous: int | None = None

    @property
    def missing(self) -> int:
        """How many messages this gap lost (0 for an epoch change: unknowable)."""
        return self.got - self.expected if self.kind == "gap" else 0


class GapTracker:
    """Sequence state of one subscriber. ``brokers``: how many brokers its socket is
    connected to (1 for a plain subscriber)."""

    def __init__(
        self, brokers: int = 1, on_gap: Callable[[Gap], None] | None = None, cap: int = _CAP
    ) -> None:
        self.brokers = brokers
        self.on_gap = on_gap
        self.cap = cap
        self._last: dict[tuple[int, bytes], int] = {}
        self._epochs: dict[int, int] = {}  # epoch -> the count of messages at its last sight
        self._count = 0
        self.gaps = 0  # Gap events of kind "gap"
        self.missed = 0  # messages lost in them
        self.epoch_changes = 0
        self.resets = 0  # topics busd forgot (sequence back at 1)
        self.unstamped = 0  # messages without a stamp (an older busd)
        self.last_gap: Gap | None = None

    def observe(self, topic_b: bytes, stamp: bytes | None) -> bool:
        """Take one message's stamp frame (None: the message had none, from an older busd);
        False when ``stamp`` is not a stamp (the message breaks the protocol)."""
        if stamp is None:
            self.unstamped += 1
            return True
        if len(stamp) != STAMP_LEN:
            return False
        epoch, seq = unpack_stamp(stamp)  # read_stamp's reading, without its call
        self._count += 1
        epochs = self._epochs
        if epoch not in epochs:
            self._new_epoch(topic_b, epoch, seq)
        epochs[epoch] = self._count
        key = (epoch, topic_b)
        last = self._last.get(key)
        if last is None:
            if len(self._last) >= self.cap:
                self._last.clear()
            self._last[key] = seq  # the baseline: nothing before it is this one's concern
            return True
        self._last[key] = seq
        if seq == last + 1:
            return True
        if seq > last + 1:
            self.gaps += 1
            self.missed += seq - last - 1
            self._report(Gap("gap", topic_b.decode(errors="replace"), epoch, last + 1, seq))
        elif seq == 1:
            self.resets += 1
        return True

    def _new_epoch(self, topic_b: bytes, epoch: int, seq: int) -> None:
        epochs = self._epochs
        first = not epochs
        previous: int | None = None
        if len(epochs) >= self.brokers:
            # One broker's stream was replaced by this one: the one silent the longest.
            previous = min(epochs, key=epochs.__getitem__)
            del epochs[previous]
            for key in [k for k in self._last if k[0] == previous]:
                del self._last[key]
        if first or (previous is None and self.brokers > 1):
            return  # a first sight of a broker: a baseline, not a change
        self.epoch_changes += 1
        self._report(Gap("epoch", topic_b.decode(errors="replace"), epoch, 0, seq, previous))

    def _report(self, gap: Gap) -> None:
        self.last_gap = gap
        if self.on_gap is not None:
            self.on_gap(gap)
