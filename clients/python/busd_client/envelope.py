"""The wire codec of docs/protocol.md: header frames, envelopes, egress messages, replies."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = [
    "HEADER_LEN",
    "PROTOCOL_VERSION",
    "DecodeError",
    "Message",
    "decode_message",
    "encode_envelope",
    "encode_header",
    "new_id",
]

PROTOCOL_VERSION = 1
HEADER_LEN = 10
_HEADER = struct.Struct(">2sQ")
_MAGIC = bytes((0x42, PROTOCOL_VERSION))
_packb = msgpack.packb
_unpackb = msgpack.unpackb


class DecodeError(ValueError):
    """An egress message that does not follow docs/protocol.md §3."""


def encode_header(seq: int) -> bytes:
    """Frame 0: ``B``, the protocol version, then ``seq`` as a uint64, big-endian."""
    return _HEADER.pack(_MAGIC, seq)


def new_id() -> str:
    """A fresh message id: 128 random bits as 32 hex digits (what a uuid4 carries)."""
    return os.urandom(16).hex()


def encode_envelope(
    topic: str,
    schema: str,
    version: int,
    data: Mapping[str, Any],
    *,
    id: str,
    publisher: str,
    ts: int | None = None,
) -> bytes:
    """Frame 2: the envelope map. ``ts`` defaults to now, in ns since the Unix epoch."""
    return _packb(  # type: ignore[no-any-return]
        {
            "topic": topic,
            "schema": schema,
            "version": version,
            "id": id,
            "publisher": publisher,
            "ts": time.time_ns() if ts is None else ts,
            "data": data,
        }
    )


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a subscriber receives it; ``envelope`` is the raw bytes busd forwarded."""

    topic: str
    schema: str
    version: int
    id: str
    publisher: str
    ts: int
    data: dict[str, Any]
    envelope: bytes

    def to_dict(self) -> dict[str, Any]:
        """The protocol fields, e.g. for JSON output (the raw envelope left out)."""
        return {
            "topic": self.topic,
            "schema": self.schema,
            "version": self.version,
            "id": self.id,
            "publisher": self.publisher,
            "ts": self.ts,
            "data": self.data,
        }


def _field(env: Mapping[str, Any], name: str, kind: type) -> Any:
    value = env.get(name)
    if type(value) is not kind:
        raise DecodeError(f"envelope.{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def decode_message(topic: bytes, envelope: bytes) -> Message:
    """Decode the two egress frames. Unknown envelope keys are ignored.

    Raises DecodeError when the bytes are not a valid envelope for that topic.
    """
    try:
        env = _unpackb(envelope, raw=False, strict_map_key=True)
        topic_s = topic.decode()
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"undecodable message: {exc}") from exc
    if type(env) is not dict:
        raise DecodeError(f"envelope: expected map, got {type(env).__name__}")
    env_topic = _field(env, "topic", str)
    if env_topic != topic_s:
        raise DecodeError("envelope.topic differs from the topic frame")
    return Message(
        env_topic,
        _field(env, "schema", str),
        _field(env, "version", int),
        _field(env, "id", str),
        _field(env, "publisher", str),
        _field(env, "ts", int),
        _field(env, "data", dict),
        envelope,
    )
