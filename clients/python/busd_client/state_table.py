"""The state view's table: the latest message per key, the merge rule, TTL and tombstones.

A ``StateTable`` holds one ``StateEntry`` per key, ``(schema, *key values)`` as the schema's
state rule names them (docs/schemas.md "Keyed state"). ``offer`` decides what a message
does to its key and returns the ``StateChange`` (or None when it changes nothing):

- one broker (``merge=False``): busd's own order is the truth, so every message offered
  replaces the key's entry, an ``ends`` message removes it; a copy of the entry's own
  message (same ``id``) changes nothing;
- a pool (``merge=True``): each broker accepted a different part of the stream, so the
  newest wins by the rule's ``order`` field (else the envelope's ``ts``), ties broken by
  ``id``; an ended key leaves a tombstone (its order and id) so that an older copy of it
  held by a slower broker's snapshot does not bring it back.

TTL: an entry of a rule with ``ttl_s`` that is not refreshed within ``ttl_s`` seconds is
dropped (``expired``); the clock starts at the message's receipt (live) or at its envelope
``ts`` (from a snapshot, whose acceptance time busd does not ship; never later than now).
Expiry is swept from a heap by ``expire(now)``. Plain state; time is passed in.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Any, Literal

from busd_protocol.messages import Message
from busd_protocol.schemas.state import StateRule
from busd_protocol.stamps import TOPIC_IDLE

__all__ = ["Key", "StateChange", "StateEntry", "StateTable", "key_of"]

Key = tuple[str | int, ...]  # (schema, *values of the rule's key fields)
Kind = Literal["added", "updated", "removed", "expired", "synced", "restarted", "lost", "failed"]
_TOMBSTONES = 200_000
_TOMBSTONE_TTL = 600.0  # seconds a tombstone of a rule without ttl_s is kept
_SKEW = 60.0  # seconds of publisher clock skew allowed for when telling a copy from a reset


@dataclass(frozen=True, slots=True)
class StateEntry:
    """The current message of one key, with where it came from: ``broker`` (the state
    endpoint), ``epoch`` and ``seq`` (busd's stamp when it accepted it) and ``order`` (the
    value the pool merge compares)."""

    key: Key
    message: Message
    epoch: int
    seq: int
    broker: str
    order: int

    @property
    def data(self) -> dict[str, Any]:
        return self.message.data

    @property
    def topic(self) -> str:
        return self.message.topic

    def to_dict(self) -> dict[str, Any]:
        """For JSON output: the key, the message's protocol fields and the stamp."""
        return {
            "key": list(self.key),
            **self.message.to_dict(),
            "epoch": self.epoch,
            "seq": self.seq,
            "broker": self.broker,
        }


@dataclass(frozen=True, slots=True)
class StateChange:
    """What happened to the view.

    StateEntry changes (``key`` set): ``added``, ``updated`` (``entry`` the new one,
    ``previous`` the one it replaced), ``removed`` (an ``ends`` message, or the key is no
    longer in its broker's snapshot: ``detail`` says which), ``expired`` (TTL); for the
    last two ``entry`` is the entry that went. Broker events (``key`` None, ``broker`` set):
    ``synced`` (a snapshot of it was applied), ``restarted`` (a new epoch: busd restarted;
    entries are kept until refreshed or expired), ``lost`` (its live stream lost messages
    or its connection: it is snapshotted again), ``failed`` (a snapshot failed: retried)."""

    kind: Kind
    key: Key | None = None
    entry: StateEntry | None = None
    previous: StateEntry | None = None
    broker: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.kind,
            "key": None if self.key is None else list(self.key),
            "entry": None if self.entry is None else self.entry.to_dict(),
            "broker": self.broker if self.broker is not None else self.entry and self.entry.broker,
            "detail": self.detail,
        }


def key_of(message: Message, rule: StateRule) -> Key | None:
    """The message's key, or None when a key field is missing or not a str/int."""
    data = message.data
    values: list[str | int] = [message.schema]
    for name in rule.key:
        value = data.get(name)
        if type(value) is not str and type(value) is not int:
            return None
        values.append(value)
    return tuple(values)


def _older(old: StateEntry, message: Message, stamp: tuple[int, int, str], wall: float) -> bool:
    """One broker: ``message`` came before ``old`` in busd's stream (a live copy that the
    snapshot's reply overtook). Known from the stamps when both are of one topic and epoch,
    unless the topic may have been forgotten meanwhile (its numbers start again at 1)."""
    if old.epoch != stamp[0] or old.seq < stamp[1] or old.message.topic != message.topic:
        return False
    return wall - old.message.ts / 1e9 < TOPIC_IDLE - _SKEW


class StateTable:
    """The entries of one view and what ``offer`` has done (counters)."""

    def __init__(self, merge: bool) -> None:
        self.merge = merge
        self.entries: dict[Key, StateEntry] = {}
        self._expiry: list[tuple[float, int, Key, StateEntry]] = []  # heap: expires at (monotonic)
        self._count = 0
        self._tombstones: dict[Key, tuple[int, str, float]] = {}  # order, id, until
        self.unkeyed = 0  # messages of a schema without a rule, or without its key fields
        self.duplicates = 0  # copies of an entry's own message
        self.stale = 0  # older (pool: by order) than what the key holds
        self.expired = 0

    def __len__(self) -> int:
        return len(self.entries)

    def offer(
        self,
        message: Message,
        rule: StateRule | None,
        stamp: tuple[int, int, str],
        now: float,
        wall: float,
        *,
        snapshot: bool = False,
        key: Key | None = None,
    ) -> StateChange | None:
        """Apply one message (``stamp``: epoch, seq, broker) at ``now`` (monotonic) and
        ``wall`` (Unix seconds); ``snapshot``: it comes from a snapshot, not live; ``key``:
        its key when the caller has it already."""
        if key is None and (rule is None or (key := key_of(message, rule)) is None):
            self.unkeyed += 1
            return None
        assert rule is not None  # a key comes from a rule
        order = message.data.get(rule.order) if rule.order is not None else message.ts
        if type(order) is not int:
            order = message.ts
        old = self.entries.get(key)
        if old is not None and old.message.id == message.id:
            self.duplicates += 1
            # busd's stamp of its copy: where the key is now held (used by drop_missing)
            self.entries[key] = replace(old, epoch=stamp[0], seq=stamp[1], broker=stamp[2])
            return None
        if self.merge:
            if not self._newer(key, old, order, message.id):
                return None
        elif old is not None and _older(old, message, stamp, wall):
            self.stale += 1
            return None
        if rule.is_end(message.data):
            if self.merge:
                self._bury(key, order, message.id, now + (rule.ttl_s or _TOMBSTONE_TTL))
            if old is None:
                return None
            del self.entries[key]
            return StateChange("removed", key, old, None, stamp[2], "ended")
        expires_at = None
        if rule.ttl_s is not None:
            since = min(message.ts / 1e9, wall) if snapshot else wall
            left = since + rule.ttl_s - wall
            if left <= 0:
                self.expired += 1
                if old is None:
                    return None
                del self.entries[key]
                return StateChange("expired", key, old, None, stamp[2])
            expires_at = now + left
        entry = StateEntry(key, message, stamp[0], stamp[1], stamp[2], order)
        self.entries[key] = entry
        if expires_at is not None:
            self._count += 1
            heapq.heappush(self._expiry, (expires_at, self._count, key, entry))
            if len(self._expiry) > 2 * len(self.entries) + 1024:
                self._compact()
        return StateChange("added" if old is None else "updated", key, entry, old, stamp[2])

    def _newer(self, key: Key, old: StateEntry | None, order: int, id: str) -> bool:
        if old is not None:
            if (order, id) > (old.order, old.message.id):
                return True
            self.stale += 1
            return False
        tomb = self._tombstones.get(key)
        if tomb is None or (order, id) > (tomb[0], tomb[1]):
            return True
        if id == tomb[1]:
            self.duplicates += 1
        else:
            self.stale += 1
        return False

    def _bury(self, key: Key, order: int, id: str, until: float) -> None:
        tombs = self._tombstones
        tombs.pop(key, None)
        tombs[key] = (order, id, until)
        while len(tombs) > _TOMBSTONES:
            del tombs[next(iter(tombs))]

    def drop_missing(self, broker: str, epoch: int, present: set[Key]) -> list[StateChange]:
        """After a snapshot of ``broker`` in ``epoch``: the entries last taken from it in that
        epoch that the snapshot no longer holds (busd ended, expired or evicted them)."""
        gone = [
            entry
            for key, entry in self.entries.items()
            if entry.broker == broker and entry.epoch == epoch and key not in present
        ]
        for entry in gone:
            del self.entries[entry.key]
        return [StateChange("removed", e.key, e, None, broker, "not in the snapshot") for e in gone]

    def expire(self, now: float) -> list[StateChange]:
        """Entries whose TTL ran out by ``now``; old tombstones go too."""
        changes: list[StateChange] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, _, key, entry = heapq.heappop(heap)
            if self.entries.get(key) is entry:
                del self.entries[key]
                self.expired += 1
                changes.append(StateChange("expired", key, entry, None, entry.broker))
        tombs = self._tombstones
        while tombs:
            key = next(iter(tombs))
            if tombs[key][2] > now:
                break
            del tombs[key]
        return changes

    def next_expiry(self) -> float | None:
        return self._expiry[0][0] if self._expiry else None

    def _compact(self) -> None:
        live = [item for item in self._expiry if self.entries.get(item[2]) is item[3]]
        heapq.heapify(live)
        self._expiry = live
