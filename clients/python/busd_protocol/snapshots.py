"""State snapshots (docs/protocol.md §3.2): the request, the replies and the sync token.

busd keeps the latest accepted message per key of every *state* schema
(``busd_protocol.schemas.state``) and serves a snapshot of a topic prefix on its state
endpoint (ROUTER; the client uses a DEALER). One request frame, msgpack::

    {"op": "snapshot", "req": <int>, "prefix": <str>, "sync": <optional token>}

Replies, each one multipart message:

- part:  ``{"req": r, "part": i}`` then (topic, envelope, stamp) frame triples;
- end:   ``{"req": r, "end": true, "epoch": E, "entries": n, "topics": {topic: seq},
  "rules": {schema: rule}}``;
- error: ``{"req": r, "error": code, "reason": text}``.

Sync (the race-free start): the client's SUB socket subscribes to its live prefixes, then to
``SYNC_PREFIX + token``; busd sees that subscription after the ones before it on the same
pipe, so once it has seen the token the live subscriptions are in force and the cut it
makes then loses and repeats nothing. Pure: encoding and decoding only.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from busd_protocol.envelope import MAX_TOPIC_BYTES
from busd_protocol.schemas.state import StateRule
from busd_protocol.stamps import read_stamp

__all__ = [
    "DEFAULT_STATE_ENDPOINT",
    "MAX_REQUEST_BYTES",
    "OP_SNAPSHOT",
    "SYNC_PREFIX",
    "SYNC_TOKEN",
    "SYNC_WAIT",
    "End",
    "Entry",
    "Failure",
    "Part",
    "SnapshotError",
    "SnapshotRequest",
    "decode_reply",
    "encode_end",
    "encode_error",
    "encode_part_head",
    "encode_request",
    "new_sync_token",
    "parse_request",
    "sync_subscription",
]

_packb = msgpack.packb
_unpackb = msgpack.unpackb

DEFAULT_STATE_ENDPOINT: Final = "tcp://127.0.0.1:7404"
OP_SNAPSHOT: Final = "snapshot"
# A topic never starts with 0x00 (busd_protocol.envelope), so a SUB subscribed to this
# prefix plus a token receives nothing: busd reads it as a sync marker and never applies it.
SYNC_PREFIX: Final = b"\x00busd.sync."
SYNC_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{8,64}")
SYNC_WAIT: Final = 5.0  # seconds busd waits for a request's token before not_subscribed
MAX_REQUEST_BYTES: Final = 1024
_MAX_REQ: Final = (1 << 63) - 1
_REQUEST_KEYS: Final = frozenset({"op", "req", "prefix", "sync"})


class SnapshotError(enum.StrEnum):
    """Stable error codes of the state endpoint; never renamed or reused."""

    BAD_REQUEST = "bad_request"  # not a request busd can read (the reason says why)
    NOT_SUBSCRIBED = "not_subscribed"  # the sync token was not seen within SYNC_WAIT
    FORBIDDEN = "forbidden"  # the identity may not subscribe to the prefix
    BUSY = "busy"  # too many snapshots at once; retry shortly
    SHUTTING_DOWN = "shutting_down"  # busd is draining


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    req: int
    prefix: str
    sync: str | None = None


def new_sync_token() -> str:
    """A fresh sync token: 128 random bits, 32 hex digits."""
    return os.urandom(16).hex()


def sync_subscription(token: str) -> bytes:
    """The SUB prefix that marks ``token`` in the subscription stream."""
    return SYNC_PREFIX + token.encode()


def encode_request(req: int, prefix: str, sync: str | None = None) -> bytes:
    message: dict[str, Any] = {"op": OP_SNAPSHOT, "req": req, "prefix": prefix}
    if sync is not None:
        message["sync"] = sync
    frame: bytes = _packb(message)
    return frame


def parse_request(frame: bytes) -> SnapshotRequest | tuple[int | None, str]:
    """A request, or (its ``req`` if readable, the reason it is refused ``bad_request``)."""
    if len(frame) > MAX_REQUEST_BYTES:
        return None, f"a request is at most {MAX_REQUEST_BYTES} bytes"
    try:
        message = _unpackb(frame, raw=False, strict_map_key=True)
    except Exception:
        return None, "a request is one msgpack map"
    if type(message) is not dict:
        return None, "a request is one msgpack map"
    req = message.get("req")
    if type(req) is not int or not 0 <= req <= _MAX_REQ:
        return None, "req: expected an integer from 0 to 2**63-1"
    unknown = sorted(map(repr, set(message) - _REQUEST_KEYS))
    if unknown:
        return req, f"unknown key {unknown[0]}; expected op, req, prefix, sync"
    if message.get("op") != OP_SNAPSHOT:
        return req, f"op: expected {OP_SNAPSHOT!r}"
    prefix = message.get("prefix")
    if type(prefix) is not str or len(prefix.encode()) > MAX_TOPIC_BYTES:
        return req, f"prefix: expected a string of at most {MAX_TOPIC_BYTES} bytes"
    sync = message.get("sync")
    if sync is not None and (type(sync) is not str or SYNC_TOKEN.fullmatch(sync) is None):
        return req, "sync: expected 8 to 64 characters of A-Z a-z 0-9 _ -"
    return SnapshotRequest(req, prefix, sync)


def encode_part_head(req: int, part: int) -> bytes:
    frame: bytes = _packb({"req": req, "part": part})
    return frame


def encode_end(
    req: int,
    epoch: int,
    entries: int,
    topics: Mapping[str, int],
    rules: Mapping[str, StateRule],
) -> bytes:
    frame: bytes = _packb(
        {
            "req": req,
            "end": True,
            "epoch": epoch,
            "entries": entries,
            "topics": dict(topics),
            "rules": {name: rule.wire() for name, rule in rules.items()},
        }
    )
    return frame


def encode_error(req: int | None, code: SnapshotError, reason: str) -> bytes:
    frame: bytes = _packb({"req": req, "error": code.value, "reason": reason})
    return frame


# -- reading replies (clients) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    topic: str
    envelope: bytes  # the original bytes, as accepted
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Part:
    req: int
    part: int
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class End:
    req: int
    epoch: int
    entries: int
    topics: dict[str, int]
    rules: dict[str, StateRule]


@dataclass(frozen=True, slots=True)
class Failure:
    req: int | None
    code: str  # a SnapshotError value (a newer busd may send one this client does not know)
    reason: str


def decode_reply(frames: Sequence[bytes]) -> Part | End | Failure:
    """One reply message; ``ValueError`` if it does not follow docs/protocol.md §3.2."""
    if not frames:
        raise ValueError("empty reply")
    try:
        head = _unpackb(frames[0], raw=False)
    except Exception as exc:
        raise ValueError("reply head is not msgpack") from exc
    if type(head) is not dict or type(head.get("req")) not in (int, type(None)):
        raise ValueError("reply head: expected a map with req")
    req = head["req"]
    if "error" in head:
        code, reason = head.get("error"), head.get("reason", "")
        if type(code) is not str or type(reason) is not str or len(frames) != 1:
            raise ValueError("error reply: expected error and reason strings, one frame")
        return Failure(req, code, reason)
    if type(req) is not int:
        raise ValueError("reply head: req must be an integer")
    if head.get("end") is True:
        return _decode_end(req, head, len(frames))
    part = head.get("part")
    if type(part) is not int or (len(frames) - 1) % 3:
        raise ValueError("part reply: expected part and (topic, envelope, stamp) triples")
    entries = []
    for i in range(1, len(frames), 3):
        stamp = read_stamp(frames[i + 2])
        if stamp is None:
            raise ValueError("part reply: a stamp frame is not 16 bytes")
        try:
            topic = frames[i].decode()
        except UnicodeDecodeError as exc:
            raise ValueError("part reply: a topic is not UTF-8") from exc
        entries.append(Entry(topic, bytes(frames[i + 1]), stamp[0], stamp[1]))
    return Part(req, part, tuple(entries))


def _decode_end(req: int, head: dict[str, Any], n_frames: int) -> End:
    epoch, entries, topics, rules = (
        head.get("epoch"),
        head.get("entries"),
        head.get("topics"),
        head.get("rules"),
    )
    if n_frames != 1 or type(epoch) is not int or type(entries) is not int:
        raise ValueError("end reply: expected epoch and entries integers, one frame")
    if type(topics) is not dict or not all(
        type(t) is str and type(s) is int for t, s in topics.items()
    ):
        raise ValueError("end reply: topics must map topic strings to integers")
    if type(rules) is not dict or not all(type(n) is str for n in rules):
        raise ValueError("end reply: rules must map schema names to rules")
    return End(req, epoch, entries, topics, {n: StateRule.from_wire(r) for n, r in rules.items()})
