"""Stable rejection codes (docs/protocol.md §2.1) and how a publisher treats each.

Never rename or reuse a code: clients in every language switch on them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final


class Code(enum.StrEnum):
    BAD_FRAME = "bad_frame"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    TOO_LARGE = "too_large"
    BAD_ENCODING = "bad_encoding"
    BAD_TOPIC = "bad_topic"
    BAD_ENVELOPE = "bad_envelope"
    UNKNOWN_SCHEMA = "unknown_schema"
    UNKNOWN_VERSION = "unknown_version"
    RETIRED_VERSION = "retired_version"
    SCHEMA_NOT_ALLOWED = "schema_not_allowed"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"
    DISABLED = "disabled"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"
    NOT_READY = "not_ready"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class Reject:
    """Why one message was refused: a code for machines, a reason for people."""

    code: Code
    reason: str
    # Extra reply fields (``key``, ``retry_after_ms``); small, msgpack-able values only.
    extra: dict[str, str | int] = field(default_factory=dict)


# About the broker, not the message: send it again, later or to another broker of a pool.
BROKER_REFUSALS: Final = frozenset({Code.NOT_READY, Code.SHUTTING_DOWN})
# About the rate, not the message: a publisher may retry within a deadline of its choosing.
RATE_REFUSALS: Final = frozenset({Code.RATE_LIMITED, Code.DISABLED})
# Refusals that are routine operation rather than bad input: busd does not log each one.
ROUTINE: Final = BROKER_REFUSALS | RATE_REFUSALS
