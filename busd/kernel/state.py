"""The state cache: the latest accepted message per key of every state schema.

A state schema's meta.json names the payload fields that form its key
(``busd_protocol.schemas.state``); ``Admission`` records the key of each message it accepts
(``Admission.state_key``) and the broker, once it has stamped and forwarded the message,
calls ``StateCache.record`` (which also removes the entry a message ends). An
entry is an immutable tuple
(topic bytes, envelope bytes, epoch, seq, expires_at, key): the original frames, never
re-encoded, the stamp they were forwarded with, and the key object the dict holds (an
update re-inserts that one, so the held key and an equal topic stay put).

Entries live in one dict in update order (an update pops and re-inserts its key), so the
front is the least recently updated entry. Bounds: ``max_entries`` entries and ``max_bytes``
bytes (topic + envelope); past either, entries are evicted from the front (counted
``evicted_bound``). TTL: ``sweep`` drops expired entries from the front, at most ``budget``
a call (counted ``evicted_ttl``); an update re-inserts at the back, so the front is always
the oldest update, and the first unexpired entry ends the sweep when every rule has the
same TTL (entries with a shorter TTL behind a longer one wait for the next sweeps that reach
them, and ``cut`` never serves an expired entry).

In memory only (crash-only): a restarted busd starts empty and refills from new publishes.
Pure: no I/O; time (monotonic seconds) is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from busd_protocol.schemas.state import StateRule

__all__ = ["Entry", "Keyer", "StateCache", "StateKey", "StateStatistics", "keyer"]

Key = tuple[Any, ...]  # (schema name, *the key fields' values)
# (topic bytes, envelope bytes, epoch, seq, expires_at monotonic seconds or inf, its key)
Entry = tuple[bytes, bytes, int, int, float, Key]
# (key, whether the message ends its entry, when the entry expires: monotonic or inf)
StateKey = tuple[Key, bool, float]
# A schema's key function: (payload, now) -> its StateKey, or None when it has no usable key
Keyer = Callable[[dict[str, Any], float], "StateKey | None"]
_INF = float("inf")
SWEEP_EVERY = 1.0  # seconds between TTL sweeps
SWEEP_BUDGET = 10000  # entries dropped per sweep at most


@dataclass(frozen=True, slots=True)
class StateStatistics:
    entries: int  # held now
    bytes: int  # topic + envelope bytes held now
    max_entries: int
    max_bytes: int
    stored: int  # puts (new entries and updates)
    evicted_bound: int  # dropped to stay within max_entries / max_bytes
    evicted_ttl: int  # dropped: not refreshed within the schema's ttl_s
    ended: int  # removed by a message that ends its entry (``ends``)


class StateCache:
    """Owned by the broker task; ``entries`` is read by the snapshot server (a copy)."""

    __slots__ = (
        "_next_sweep",
        "bytes",
        "ended",
        "entries",
        "evicted_bound",
        "evicted_ttl",
        "max_bytes",
        "max_entries",
        "stored",
    )

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: dict[Key, Entry] = {}
        self.bytes = 0
        self.stored = 0
        self.evicted_bound = 0
        self.evicted_ttl = 0
        self.ended = 0
        self._next_sweep = 0.0

    def record(
        self, state_key: StateKey, topic_b: bytes, env_b: bytes, epoch: int, seq: int
    ) -> None:
        """An accepted, forwarded message of a state schema (``Admission.state_key``); on the
        hot path, the one way in. An update keeps the key and topic objects it
        already holds (the new message's are freed while still in the CPU's cache, and
        fewer cold objects are freed and reused: holding is what costs, not the dict)."""
        key, ends, expires_at = state_key
        entries = self.entries
        old = entries.pop(key, None)
        if ends:
            if old is not None:
                self.bytes -= len(old[0]) + len(old[1])
                self.ended += 1
            return
        if old is None:
            entries[key] = (topic_b, env_b, epoch, seq, expires_at, key)
            held = self.bytes = self.bytes + len(topic_b) + len(env_b)
        else:
            key, was = old[5], old[0]
            if was == topic_b:
                topic_b = was
            held = self.bytes = self.bytes + len(topic_b) + len(env_b) - len(was) - len(old[1])
            entries[key] = (topic_b, env_b, epoch, seq, expires_at, key)
        self.stored += 1
        if held > self.max_bytes or len(entries) > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        entries = self.entries
        while entries and (len(entries) > self.max_entries or self.bytes > self.max_bytes):
            key = next(iter(entries))
            old = entries.pop(key)
            self.bytes -= len(old[0]) + len(old[1])
            self.evicted_bound += 1

    def sweep(self, now: float, budget: int = SWEEP_BUDGET) -> int:
        """At most once every ``SWEEP_EVERY`` seconds, drop expired entries from the front
        (at most ``budget``); returns how many were dropped."""
        if now < self._next_sweep:
            return 0
        self._next_sweep = now + SWEEP_EVERY
        entries = self.entries
        dropped = 0
        while entries and dropped < budget:
            key = next(iter(entries))
            old = entries[key]
            if old[4] > now:
                break
            del entries[key]
            self.bytes -= len(old[0]) + len(old[1])
            dropped += 1
        self.evicted_ttl += dropped
        return dropped

    def cut(self) -> list[Entry]:
        """Every entry now, oldest update first (a C-speed copy; filter it afterwards)."""
        return list(self.entries.values())

    def statistics(self) -> StateStatistics:
        return StateStatistics(
            entries=len(self.entries),
            bytes=self.bytes,
            max_entries=self.max_entries,
            max_bytes=self.max_bytes,
            stored=self.stored,
            evicted_bound=self.evicted_bound,
            evicted_ttl=self.evicted_ttl,
            ended=self.ended,
        )


def keyer(schema: str, rule: StateRule, checked: bool) -> Keyer:
    """``schema``'s key function: the key is (schema, *the key fields' values). ``checked``:
    payloads were validated against the schema, so the key fields are present strings or
    integers (the loader refuses a declaration whose key fields are not required strings or
    integers of every active and deprecated version, docs/schemas.md §7); otherwise (schema
    checks off) each is checked, and a payload without a usable key is not held.

    On the hot path: one call per accepted message of a state schema. The checked one is
    generated for the rule (as the schema checks are, ``busd_protocol.schemas.codegen``): the
    key tuple built from subscripts of the decoded payload, the ``ends`` test only when the
    rule has one, and the expiry computed once per ``now`` (the broker passes one clock
    reading per wake-up, so a batch shares one float instead of allocating one a message)."""
    if not checked:
        return _checked_keyer(schema, rule)
    values = ", ".join(f"data[{name!r}]" for name in rule.key)
    lines = ["def key_of(data, now):"]
    if rule.ttl_s is None:
        expires = "_INF"  # never expires
    else:
        lines += [
            "    global _now, _expires",
            "    if now is not _now:",
            "        _now, _expires = now, now + _TTL",
        ]
        expires = "_expires"
    end = "False"
    if rule.ends is not None:
        lines += [
            f"    value = data.get({rule.ends.field!r})",
            "    try:",  # the values are strings or integers: not True for 1, nor 1.0
            "        end = value in _ENDS and (type(value) is str or type(value) is int)",
            "    except TypeError:",  # an unhashable value (list, map) ends nothing
            "        end = False",
        ]
        end = "end"
    lines.append(f"    return ({schema!r}, {values}), {end}, {expires}")
    source = "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {
        "_INF": _INF,
        "_TTL": rule.ttl_s,
        "_ENDS": rule.ends.values if rule.ends is not None else frozenset(),
        "_now": None,
        "_expires": _INF,
    }
    exec(compile(source, f"<state key of {schema}>", "exec"), namespace)  # noqa: S102
    key_of: Keyer = namespace["key_of"]
    key_of.__doc__ = source  # the generated code is its own description
    return key_of


def _checked_keyer(schema: str, rule: StateRule) -> Keyer:
    """Schema checks off: each key field must be a string or an integer, else no key."""
    fields = rule.key
    ttl = _INF if rule.ttl_s is None else rule.ttl_s  # now + inf is inf: never expires
    is_end = rule.is_end

    def checked_key(data: dict[str, Any], now: float) -> StateKey | None:
        values = tuple(map(data.get, fields))
        for value in values:
            kind = type(value)
            if kind is not str and kind is not int:
                return None
        return (schema, *values), is_end(data), now + ttl

    return checked_key
