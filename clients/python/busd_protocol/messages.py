"""Envelopes as bytes (docs/protocol.md §1.1, §3): encoding, busd's strict decoding, and the
``Message`` value a subscriber receives.

busd forwards the envelope bytes it judged, never a re-encoding, so what a publisher encodes
here is byte for byte what every subscriber decodes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from busd_protocol.codes import Code, Reject

__all__ = [
    "DecodeError",
    "Message",
    "decode_envelope",
    "decode_message",
    "encode_envelope",
    "new_id",
]

_packb = msgpack.packb
_unpackb = msgpack.unpackb


class DecodeError(ValueError):
    """An egress message that does not follow docs/protocol.md §3."""


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
    pack: Callable[[Any], bytes] = _packb,
) -> bytes:
    """Frame 2 of a publish: the envelope map. ``ts`` defaults to now, in ns since the epoch.

    The publishers' hot path calls this for every message. ``pack`` is msgpack's packing:
    ``msgpack.packb``, or the ``pack`` of a ``msgpack.Packer`` that one thread keeps (a
    publisher does): the same bytes, without a new packer and buffer per message.
    """
    frame: bytes = pack(
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
    return frame


class _ExtRefused(ValueError):
    """An ext type in an envelope (docs/protocol.md §1.1)."""


def _refuse_ext(code: int, data: bytes) -> Any:
    raise _ExtRefused(code)


_EXT_REASON = "msgpack ext types are not allowed"
# The Python type in msgpack's "int is not allowed for map key" -> the msgpack type's name.
_KEY_TYPES = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "NoneType": "nil",
    "list": "array",
    "tuple": "array",
    "dict": "map",
}


class _DuplicateKey(ValueError):
    """A map gives one key twice (docs/protocol.md §1.1)."""


def _unique_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A map from its key/value pairs, refusing a key given twice."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[Any] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(_key_text(key))
            seen.add(key)
    return value


def _key_text(key: Any) -> str:
    """A map key as the protocol names it: a quoted str, or bin as hex."""
    if isinstance(key, bytes):
        return f"bin 0x{key[:16].hex()}{'...' if len(key) > 16 else ''}"
    text = json.dumps(str(key), ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + '..."'


def decode_envelope(frame: bytes) -> dict[str, Any] | Reject:
    """busd's reading of an envelope frame: a msgpack map, or ``bad_encoding``.

    Reasons are worded in the protocol's terms (docs/protocol.md §1.1), never the decoder's.
    What busd checks must be what every consumer decodes, whatever its msgpack library: so a
    map key given twice anywhere (decoders differ on which one wins) and any ext type are
    refused. ``max_ext_len=0`` refuses every ext with data, including the Timestamp (ext -1)
    that msgpack decodes natively without calling ``ext_hook``; ``ext_hook`` refuses an ext
    without data. Refusing duplicates costs one Python call per map (about 0.3 µs; measured
    in docs/performance.md).
    """
    try:
        value = _unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_ext_len=0,
            object_pairs_hook=_unique_pairs,
        )
    except Exception as exc:
        return Reject(Code.BAD_ENCODING, _decode_failure(exc))
    if type(value) is not dict:
        return Reject(Code.BAD_ENCODING, "envelope is not a msgpack map")
    # Keys are str or bin (strict_map_key); a bin key can never name one of the seven
    # fields, so it is passed through like any unknown key without a per-key check here.
    return value


def _decode_failure(exc: BaseException) -> str:
    """Why an envelope frame is not one strict msgpack map, in the protocol's words."""
    if isinstance(exc, msgpack.ExtraData):
        return f"envelope continues past its msgpack object ({len(exc.extra)} trailing bytes)"
    if isinstance(exc, UnicodeDecodeError):
        return "a msgpack str is not valid UTF-8"
    if isinstance(exc, msgpack.StackError):
        return "msgpack nested too deeply"
    if isinstance(exc, msgpack.FormatError):
        return "not msgpack: a byte that starts no msgpack type"
    if isinstance(exc, _DuplicateKey):
        return f"a msgpack map has the key {exc} more than once"
    text = str(exc)
    if isinstance(exc, _ExtRefused) or "max_ext_len" in text or "timestamp" in text:
        return _EXT_REASON
    if "is not allowed for map key" in text:  # strict_map_key's words: "int is not ..."
        kind = _KEY_TYPES.get(text.split(" ", 1)[0], "non-str")
        return f"a map key is a msgpack {kind}; keys must be str (or bin)"
    if "incomplete input" in text:
        return "envelope is truncated: its msgpack object is incomplete"
    return "envelope is not valid msgpack"


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
