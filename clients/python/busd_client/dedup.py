"""The duplicate filter of a pool subscriber: message ids seen lately, bounded in size and age.

In a pool a message can reach a subscriber twice: a publisher resends a message whose reply
it never got (the broker died after forwarding it, or answered too late) to another broker.
Both copies carry the same ``id``. The window remembers the ids of the last ``size``
messages, each for at most ``ttl`` seconds, whichever ends first, so memory stays bounded
(about 150 bytes an id) however long the subscriber runs. A copy arriving after its id left
the window is delivered again; docs/pool.md says how to size the window for that not to happen.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["DedupWindow"]


class DedupWindow:
    """Ids seen in the last ``size`` messages and ``ttl`` seconds. No I/O, no clock reads."""

    __slots__ = ("_seen", "duplicates", "evicted_early", "size", "ttl")

    def __init__(self, size: int = 200_000, ttl: float = 60.0) -> None:
        if size < 1:
            raise ValueError("dedup size must be at least 1")
        if not ttl > 0:
            raise ValueError("dedup ttl must be > 0 seconds")
        self.size = size
        self.ttl = float(ttl)
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> first seen, oldest first
        self.duplicates = 0  # copies suppressed
        # Ids pushed out by the size bound before their ttl ran out: a non-zero count means
        # the window is smaller than the traffic needs (see docs/pool.md).
        self.evicted_early = 0

    def __len__(self) -> int:
        return len(self._seen)

    def first(self, id: str, now: float) -> bool:
        """True when ``id`` is new (deliver it); False for a copy seen within the window."""
        seen = self._seen
        at = seen.get(id)
        if at is not None and now - at <= self.ttl:
            self.duplicates += 1
            return False
        if at is not None:
            del seen[id]  # expired: seen again counts as new, and moves to the young end
        seen[id] = now
        self._trim(now)
        return True

    def _trim(self, now: float) -> None:
        seen = self._seen
        horizon = now - self.ttl
        while seen:
            at = next(iter(seen.values()))
            if at < horizon:
                seen.popitem(last=False)
            elif len(seen) > self.size:
                seen.popitem(last=False)
                self.evicted_early += 1
            else:
                break

    def statistics(self) -> dict[str, int | float]:
        """A snapshot: ids held, bounds, copies suppressed, ids evicted before their ttl."""
        return {
            "ids": len(self._seen),
            "size": self.size,
            "ttl": self.ttl,
            "duplicates": self.duplicates,
            "evicted_early": self.evicted_early,
        }
