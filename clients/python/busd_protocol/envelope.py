"""The envelope's field rules (docs/protocol.md §1.1): limits, names, and the checks busd
applies to a decoded envelope before any policy. Clients check names against the same rules.
"""

from __future__ import annotations

import re
from typing import Any

from busd_protocol.codes import Code, Reject

MAX_TOPIC_BYTES = 255
MAX_ID_CHARS = 128
MAX_PUBLISHER_CHARS = 128

_TOPIC_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
# A publisher name: in envelopes, in publisher.<name> rate keys, in client settings.
PUBLISHER_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_PUBLISHER_CHARS}}}")
PUBLISHER_RULE = f"1-{MAX_PUBLISHER_CHARS} chars of A-Z a-z 0-9 . _ -"
_SCHEMA = re.compile(r"[a-z0-9._-]{1,64}")

# Reasons name msgpack's types (bin, nil, array, map), never Python's.
_TYPE_NAMES = {
    str: "string",
    int: "int",
    float: "float",
    bool: "bool",
    bytes: "bin",
    list: "array",
    dict: "map",
    type(None): "nil",
}


def type_name(value: object) -> str:
    """The protocol's name for a decoded msgpack value's type, for error reasons."""
    return _TYPE_NAMES.get(type(value), "msgpack value")


def check_topic(topic: str) -> Reject | None:
    """A topic frame, already decoded from UTF-8."""
    if not topic:
        return Reject(Code.BAD_TOPIC, "topic is empty")
    if len(topic) > MAX_TOPIC_BYTES or len(topic.encode()) > MAX_TOPIC_BYTES:
        return Reject(Code.BAD_TOPIC, f"topic is over {MAX_TOPIC_BYTES} bytes")
    bad = _TOPIC_FORBIDDEN.search(topic)
    if bad is not None:
        return Reject(
            Code.BAD_TOPIC, f"topic has a forbidden character {bad.group()!r} at {bad.start()}"
        )
    return None


def _field_error(name: str, expected: str, value: object) -> Reject:
    return Reject(
        Code.BAD_ENVELOPE, f"envelope.{name}: expected {expected}, got {type_name(value)}"
    )


def check_envelope(topic: str, env: dict[str, Any]) -> Reject | None:
    """Field presence, types and ranges; the topic frame must equal ``env['topic']``.

    ``env`` is a decoded msgpack map. The common case (a good envelope) is one flat
    expression; only a bad one pays for finding the first failing field and explaining it.
    """
    try:
        schema, version, ident = env["schema"], env["version"], env["id"]
        publisher, ts = env["publisher"], env["ts"]
        if (
            env["topic"] == topic
            and type(env["data"]) is dict
            and type(schema) is str
            and type(version) is int
            and version >= 1
            and type(ident) is str
            and 0 < len(ident) <= MAX_ID_CHARS
            and type(publisher) is str
            and type(ts) is int
            and ts >= 0
        ):
            if schema in _GOOD_SCHEMAS and publisher in _GOOD_PUBLISHERS:
                return None
            if (
                _SCHEMA.fullmatch(schema) is not None
                and PUBLISHER_NAME.fullmatch(publisher) is not None
            ):
                _remember(schema, publisher)
                return None
    except KeyError:
        pass
    return explain_envelope(topic, env)


# Schema and publisher names that passed their rules: a set lookup instead of two regex
# matches per message (~0.5 µs, docs/performance.md). Bounded: past the cap a set starts
# again, and a name only costs its regex match once more.
_GOOD_SCHEMAS: set[str] = set()
_GOOD_PUBLISHERS: set[str] = set()
GOOD_NAMES_MAX = 4096


def _remember(schema: str, publisher: str) -> None:
    for good, name in ((_GOOD_SCHEMAS, schema), (_GOOD_PUBLISHERS, publisher)):
        if len(good) >= GOOD_NAMES_MAX:
            good.clear()
        good.add(name)


def explain_envelope(topic: str, env: dict[str, Any]) -> Reject | None:
    """The first failing rule of ``env``, in field order; None if every rule holds."""
    for name in ("topic", "schema", "version", "id", "publisher", "ts", "data"):
        if name not in env:
            return Reject(Code.BAD_ENVELOPE, f"envelope.{name}: required field is missing")
    value = env["topic"]
    if type(value) is not str:
        return _field_error("topic", "string", value)
    if value != topic:
        return Reject(Code.BAD_TOPIC, "envelope.topic differs from the topic frame")
    value = env["schema"]
    if type(value) is not str:
        return _field_error("schema", "string", value)
    if _SCHEMA.fullmatch(value) is None:
        return Reject(Code.BAD_ENVELOPE, "envelope.schema: expected 1-64 chars of a-z 0-9 . _ -")
    value = env["version"]
    if type(value) is not int:
        return _field_error("version", "int", value)
    if value < 1:
        return Reject(Code.BAD_ENVELOPE, "envelope.version: expected an int >= 1")
    value = env["id"]
    if type(value) is not str:
        return _field_error("id", "string", value)
    if not 0 < len(value) <= MAX_ID_CHARS:
        return Reject(
            Code.BAD_ENVELOPE,
            f"envelope.id: expected 1-{MAX_ID_CHARS} chars (characters, not bytes)",
        )
    value = env["publisher"]
    if type(value) is not str:
        return _field_error("publisher", "string", value)
    if PUBLISHER_NAME.fullmatch(value) is None:
        return Reject(Code.BAD_ENVELOPE, f"envelope.publisher: expected {PUBLISHER_RULE}")
    value = env["ts"]
    if type(value) is not int:
        return _field_error("ts", "int", value)
    if value < 0:
        return Reject(Code.BAD_ENVELOPE, "envelope.ts: expected an int >= 0")
    value = env["data"]
    if type(value) is not dict:
        return _field_error("data", "map", value)
    return None
