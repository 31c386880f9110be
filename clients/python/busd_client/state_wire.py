"""The snapshot wire format as the state view needs it (docs/protocol.md "State snapshots").

Placeholder until busd_protocol.snapshots (the one definition, shared with busd) lands:
every fact the view uses about the wire is here and nowhere else in busd_client, so the
swap is one import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack

from busd_protocol.stamps import STAMP_LEN, read_stamp

__all__ = [
    "DEFAULT_STATE_ENDPOINT",
    "SNAPSHOT_ERRORS",
    "SYNC_PREFIX",
    "End",
    "Failure",
    "Part",
    "Rule",
    "encode_request",
    "read_reply",
]

DEFAULT_STATE_ENDPOINT: Final = "tcp://127.0.0.1:7404"
SYNC_PREFIX: Final = b"\x00busd.sync."
SNAPSHOT_ERRORS: Final = ("bad_request", "not_subscribed", "forbidden", "busy", "shutting_down")


@dataclass(frozen=True, slots=True)
class Rule:
    """A keyed-state schema's declaration, as the snapshot's ``end`` carries it."""

    key: tuple[str, ...]
    ttl_s: float | None = None
    ends_field: str | None = None
    ends_values: frozenset[Any] = frozenset()
    order: str | None = None


@dataclass(frozen=True, slots=True)
class Part:
    req: int
    index: int
    entries: list[tuple[bytes, bytes, int, int]]  # topic, envelope, epoch, seq


@dataclass(frozen=True, slots=True)
class End:
    req: int
    epoch: int
    entries: int
    topics: dict[bytes, int]
    rules: dict[str, Rule]


@dataclass(frozen=True, slots=True)
class Failure:
    req: int
    code: str
    reason: str


def encode_request(req: int, prefix: str, sync: str | None) -> bytes:
    request: dict[str, Any] = {"op": "snapshot", "req": req, "prefix": prefix}
    if sync is not None:
        request["sync"] = sync
    frame: bytes = msgpack.packb(request)
    return frame


def _rule(value: Any) -> Rule | None:
    if not isinstance(value, dict):
        return None
    key = value.get("key")
    if not isinstance(key, list) or not key or not all(isinstance(k, str) for k in key):
        return None
    ttl = value.get("ttl_s")
    ends = value.get("ends")
    order = value.get("order")
    if ttl is not None and (not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0):
        return None
    field, values = None, frozenset[Any]()
    if isinstance(ends, dict):
        field = ends.get("field")
        raw = ends.get("values")
        if not isinstance(field, str) or not isinstance(raw, list):
            return None
        values = frozenset(v for v in raw if isinstance(v, str | int))
    elif ends is not None:
        return None
    if order is not None and not isinstance(order, str):
        return None
    return Rule(tuple(key), None if ttl is None else float(ttl), field, values, order)


def read_reply(frames: list[bytes]) -> Part | End | Failure | None:
    """One reply message; None when it breaks the protocol."""
    try:
        head = msgpack.unpackb(frames[0], raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException, IndexError):
        return None
    if not isinstance(head, dict) or type(head.get("req")) is not int:
        return None
    req: int = head["req"]
    if "part" in head:
        rest = frames[1:]
        if type(head["part"]) is not int or len(rest) % 3:
            return None
        entries = []
        for i in range(0, len(rest), 3):
            stamp = read_stamp(rest[i + 2]) if len(rest[i + 2]) == STAMP_LEN else None
            if stamp is None:
                return None
            entries.append((rest[i], rest[i + 1], stamp[0], stamp[1]))
        return Part(req, head["part"], entries)
    if len(frames) != 1:
        return None
    if head.get("end") is True:
        epoch, count = head.get("epoch"), head.get("entries")
        topics, rules = head.get("topics", {}), head.get("rules", {})
        if type(epoch) is not int or type(count) is not int:
            return None
        if not isinstance(topics, dict) or not isinstance(rules, dict):
            return None
        positions = {}
        for topic, seq in topics.items():
            if not isinstance(topic, str) or type(seq) is not int:
                return None
            positions[topic.encode()] = seq
        parsed = {}
        for schema, raw in rules.items():
            rule = _rule(raw)
            if not isinstance(schema, str) or rule is None:
                return None
            parsed[schema] = rule
        return End(req, epoch, count, positions, parsed)
    code, reason = head.get("error"), head.get("reason", "")
    if isinstance(code, str) and isinstance(reason, str):
        return Failure(req, code, reason)
    return None
