"""The frames of protocol version 1 (docs/protocol.md §1-§3): what each socket carries.

A publisher (DEALER) sends a batch of K >= 1 messages as one ZeroMQ message of 1 + 2K
frames: a 10-byte header (``B``, the protocol version, the first message's sequence number
as a big-endian uint64), then a topic (UTF-8) and an envelope (a msgpack map) per message;
the messages are numbered seq, seq + 1, ..., seq + K - 1. K = 1 is the single message of
three frames. busd's ROUTER sees the publisher's routing identity in front of them. A reply
is one frame (``busd_protocol.replies``). A subscriber (SUB) receives three frames: the
topic, the envelope bytes exactly as the publisher sent them, and the delivery stamp.
"""

from __future__ import annotations

import struct
from typing import Final

from busd_protocol.codes import Code, Reject

__all__ = [
    "DEFAULT_MAX_BATCH",
    "GOOD_PREFIX",
    "HEADER_LEN",
    "INGRESS_FRAMES",
    "MAGIC",
    "MAX_BATCH_LIMIT",
    "MAX_SEQ",
    "PROTOCOL_VERSION",
    "encode_header",
    "read_header",
]

MAGIC: Final = 0x42  # ASCII "B"
PROTOCOL_VERSION: Final = 1
HEADER_LEN: Final = 10
# The first two bytes of every header this version accepts; the rest is the sequence number.
GOOD_PREFIX: Final = bytes((MAGIC, PROTOCOL_VERSION))
# Frames of one single-message publish after the ROUTER's identity frame: header, topic,
# envelope. A batch of K messages has 1 + 2K.
INGRESS_FRAMES: Final = 3
# Messages per batch a broker takes by default (its `max_batch`, announced in every reply as
# ``batch``), and the most any broker may be configured to take.
DEFAULT_MAX_BATCH: Final = 1000
MAX_BATCH_LIMIT: Final = 65536
# The largest sequence number: a batch's last message must not pass it.
MAX_SEQ: Final = (1 << 64) - 1
_HEADER: Final = struct.Struct(">2sQ")


def encode_header(seq: int) -> bytes:
    """Frame 0 of a publish: ``B``, the protocol version, then ``seq`` as a uint64."""
    return _HEADER.pack(GOOD_PREFIX, seq)


def read_header(frame: bytes) -> tuple[int | None, Reject | None]:
    """A publisher's header frame: its sequence number whenever it can be read (also for
    another protocol version, so that the refusal names the message), and why it is refused.

    A frame starting ``B`` with another version byte is ``unsupported_protocol`` whatever its
    length; any other malformed header is ``bad_frame`` and has no sequence number.
    """
    readable = len(frame) == HEADER_LEN and frame[0] == MAGIC
    seq = int.from_bytes(frame[2:], "big") if readable else None
    if frame[:1] == b"B" and len(frame) >= 2 and frame[1] != PROTOCOL_VERSION:
        return seq, Reject(
            Code.UNSUPPORTED_PROTOCOL,
            f"protocol version {frame[1]} is not spoken here; busd speaks {PROTOCOL_VERSION}",
        )
    if seq is None:
        return None, Reject(Code.BAD_FRAME, "header frame must be 10 bytes: 'B', version, u64 seq")
    return seq, None
