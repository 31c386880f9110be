"""Reading one publish from the ROUTER: its frames, and the shape of the batch they make.

A publish is one ZeroMQ message of 1 + 2K frames: the header, then a topic and an envelope
per message, numbered seq, seq + 1, ..., seq + K - 1 (docs/protocol.md §1). This module reads
the frames after the header (at most the 2 * ``max_batch`` a batch may have) and says which
messages they hold and which sequence numbers are refused for the frames alone; the broker
judges each message (``busd.transport.broker``). Nothing here judges a topic or an envelope.

The rules, in the order of docs/protocol.md §2.3 (header first, then the frame count):

- a header busd cannot read, or of another protocol version: one refusal (``read_header``);
- a header alone: its seq is ``bad_frame``;
- an even frame count (the last topic has no envelope): every complete pair is judged as
  usual, and the seq the last topic would have had is ``bad_frame``;
- a batch whose last seq would pass 2^64 - 1: its first seq is ``bad_frame``, nothing judged;
- more than 1 + 2 * ``max_batch`` frames: over-long (``busd.transport.overlong``), and every
  seq it could have meant, seq to seq + ``max_batch`` - 1, is ``bad_frame``.
"""

from __future__ import annotations

from collections.abc import Callable

import zmq

from busd_protocol.codes import Code, Reject
from busd_protocol.frames import GOOD_PREFIX, HEADER_LEN, MAX_SEQ, read_header
from busd_protocol.messages import decode_envelope

__all__ = ["Shape", "culprit", "overlong_refusals", "read_body", "shape"]

_CULPRIT_CHARS = 64  # each culprit field in a log line is cut to this many characters

_NO_FRAMES: list[zmq.Frame] = []
HEADER_ONLY = Reject(
    Code.BAD_FRAME, "a header with no topic and envelope after it (a publish has 1 + 2K frames)"
)
NO_ENVELOPE = Reject(Code.BAD_FRAME, "batch ends with a topic and no envelope")
PAST_MAX_SEQ = Reject(Code.BAD_FRAME, "the batch's sequence numbers would pass 2^64 - 1")

# (first seq or None, messages to judge, the refusal of the seq after them or None)
Shape = tuple[int | None, int, Reject | None]


def read_body(recv: Callable[..., zmq.Frame], more: bool, cap: int) -> tuple[list[zmq.Frame], bool]:
    """The frames after the header (``more``: the header had MORE set), at most ``cap``;
    and whether the message ended within them (False: over-long, the rest is unread).

    The rest of a multipart message is already here, so ``recv`` never blocks. Frames
    (copy=False) carry ``more`` for free; getsockopt(RCVMORE) costs ~0.6 µs a call."""
    if not more:
        return _NO_FRAMES, True
    body: list[zmq.Frame] = []
    append = body.append
    for _ in range(cap):
        frame = recv(copy=False)
        append(frame)
        if not frame.more:
            return body, True
    return body, False


def shape(header: bytes, frames: int) -> Shape:
    """What a header and ``frames`` body frames (the message ended) hold: the first seq,
    how many messages to judge, and the refusal of the seq after them (see the module's
    rules). A header busd cannot read gives no messages and its refusal stands for the
    whole publish, with the seq it could read (or None)."""
    if len(header) == HEADER_LEN and header[:2] == GOOD_PREFIX:
        seq = int.from_bytes(header[2:], "big")
        count = frames >> 1
        if seq + count - 1 + (frames & 1) > MAX_SEQ:  # the last seq the frames name
            return seq, 0, PAST_MAX_SEQ
        if frames & 1:
            return seq, count, NO_ENVELOPE
        if not count:
            return seq, 0, HEADER_ONLY
        return seq, count, None
    seq_or_none, reject = read_header(header)
    assert reject is not None, "a good header matches GOOD_PREFIX"
    return seq_or_none, 0, reject


def overlong_refusals(
    header: bytes, frames: int, max_batch: int
) -> list[tuple[int | None, Reject]]:
    """The answer to an over-long publish of ``frames`` frames in all (header included):
    ``bad_frame`` for every seq it could have meant (seq .. seq + max_batch - 1, not past
    2^64 - 1); for a header busd cannot read, that header's one refusal."""
    seq, reject = read_header(header)
    if reject is not None or seq is None:
        assert reject is not None
        return [(seq, reject)]
    over = Reject(
        Code.BAD_FRAME,
        f"a batch holds at most {max_batch} messages ({1 + 2 * max_batch} frames), "
        f"got {frames} frames",
    )
    last = min(seq + max_batch - 1, MAX_SEQ)
    return [(s, over) for s in range(seq, last + 1)]


def culprit(topic_b: bytes | None, env_b: bytes | None) -> dict[str, object]:
    """Who sent a refused message, for its log line: topic, publisher, schema and version
    when they can be read (the envelope is decoded again: only for lines that get logged).
    Every field is bounded, so a hostile message cannot make a long line."""
    found: dict[str, object] = {}
    if topic_b is not None:
        found["topic"] = topic_b[: _CULPRIT_CHARS * 4].decode(errors="replace")[:_CULPRIT_CHARS]
    env = decode_envelope(env_b) if env_b is not None else None
    if type(env) is dict:
        for name in ("publisher", "schema"):
            value = env.get(name)
            if type(value) is str:
                found[name] = value[:_CULPRIT_CHARS]
        version = env.get("version")
        if type(version) is int:
            found["version"] = version
    return found
