"""The delivery stamp: busd's third egress frame (docs/protocol.md §3).

Every message busd forwards carries, after the topic and envelope frames (unchanged, never
re-encoded), a 16-byte frame: the broker **epoch** (8 bytes, big-endian; random at every
start of busd, so a restart is visible) and the topic's **sequence number** in that epoch
(8 bytes, big-endian; 1 for the first message of a topic, then +1 per forwarded message of
that topic). A subscriber that sees the number jump knows how many messages of that topic
it lost; a new epoch means busd restarted (what was in flight then is unknowable); a topic
number back at 1 in the same epoch means busd forgot an idle topic (``TOPIC_IDLE``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

__all__ = ["STAMP_LEN", "TOPIC_IDLE", "encode_stamp", "read_stamp", "unpack_stamp"]

_LAYOUT: Final = struct.Struct(">QQ")  # epoch, sequence number
STAMP_LEN: Final = _LAYOUT.size
# busd forgets a topic's number after between TOPIC_IDLE and 2 x TOPIC_IDLE seconds without
# a message on it (or sooner past its topic cap); the topic then starts again at 1.
TOPIC_IDLE: Final = 300.0


# (epoch, seq) -> the frame; one struct call (busd calls it for every message it forwards).
encode_stamp: Final[Callable[[int, int], bytes]] = _LAYOUT.pack
# A frame of STAMP_LEN bytes -> (epoch, seq); read_stamp checks the length first.
unpack_stamp: Final[Callable[[bytes], tuple[int, int]]] = _LAYOUT.unpack


def read_stamp(frame: bytes) -> tuple[int, int] | None:
    """(epoch, seq), or None when ``frame`` is not a stamp."""
    if len(frame) != STAMP_LEN:
        return None
    epoch, seq = _LAYOUT.unpack(frame)
    return epoch, seq
