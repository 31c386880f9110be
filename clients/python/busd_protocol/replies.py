"""Reply frames (docs/protocol.md §2): busd's encoding and a publisher's reading of them.

busd answers every message it read: one reply frame per publisher per batch, holding ranges
of accepted sequence numbers and a list of rejections (``seq``, ``code``, ``reason`` and the
code's extra fields). ``draining: true`` says busd is shutting down. ``batch`` (every reply
of a busd that takes batches) is the most messages it takes in one batch (docs/protocol.md
§2): a client sends single messages until a reply has told it so.

Reading is for the single and the pool publishers. Untrusted bytes in, plain values out:
the ranges and rejections that are well formed and name sequence numbers this connection
sent, and a count of what broke the protocol. A range
outside what was sent is dropped whole (not clamped), so a bogus reply cannot settle a
message that busd never answered.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

import msgpack

from busd_protocol.codes import Reject

__all__ = ["BATCH_KEY", "Reply", "encode_reply", "read_reply", "reject_entry", "seqs_in"]

# The reply key announcing how many messages busd takes in one batch (docs/protocol.md §2).
BATCH_KEY = "batch"

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def encode_reply(
    acc: list[int], rejects: list[dict[str, Any]], draining: bool = False, batch: int = 0
) -> bytes:
    """One reply frame; ``acc`` is flat ``[lo, hi, lo, hi, ...]``. ``draining`` adds the
    ``draining`` key: busd is shutting down, publish elsewhere. ``batch`` >= 1 adds the
    ``batch`` key: the most messages the sender takes in one batch."""
    pairs = [acc[i : i + 2] for i in range(0, len(acc), 2)]
    reply: dict[str, Any] = {"acc": pairs, "rej": rejects}
    if batch:
        reply[BATCH_KEY] = batch
    if draining:
        reply["draining"] = True
    frame: bytes = _packb(reply)
    return frame


def reject_entry(seq: int | None, reject: Reject) -> dict[str, Any]:
    """One element of a reply's ``rej`` list."""
    entry: dict[str, Any] = {"seq": seq, "code": reject.code.value, "reason": reject.reason}
    if reject.extra:
        entry.update(reject.extra)
    return entry


class Reply(NamedTuple):
    acc: list[tuple[int, int]]  # accepted ranges, 1 <= lo <= hi <= the last seq sent
    rej: list[tuple[int, dict[str, Any]]]  # (seq, rejection map), seq sent on this socket
    bad: int  # protocol violations seen in the frame
    draining: bool  # busd said it is shutting down
    batch: int = 0  # messages busd takes per batch (its reply's ``batch``); 0: not said


_NOTHING = Reply([], [], 1, False)


def read_reply(frame: bytes, last_seq: int) -> Reply:
    """The usable parts of ``frame`` for a socket that has sent seqs 1..``last_seq``."""
    try:
        reply = _unpackb(frame, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return _NOTHING
    if type(reply) is not dict:
        return _NOTHING
    acc_in, rej_in = reply.get("acc", []), reply.get("rej", [])
    bad = 0
    if type(acc_in) is not list:
        bad, acc_in = bad + 1, []
    if type(rej_in) is not list:
        bad, rej_in = bad + 1, []
    acc: list[tuple[int, int]] = []
    for pair in acc_in:
        if (
            type(pair) is not list
            or len(pair) != 2
            or type(pair[0]) is not int
            or type(pair[1]) is not int
            or not 1 <= pair[0] <= pair[1] <= last_seq
        ):
            bad += 1
            continue
        acc.append((pair[0], pair[1]))
    rej: list[tuple[int, dict[str, Any]]] = []
    for item in rej_in:
        seq = item.get("seq", 0) if type(item) is dict else 0
        if seq is None:
            continue  # a header busd could not read: never one this client sent
        if type(seq) is not int or not 1 <= seq <= last_seq:
            bad += 1
            continue
        if type(item.get("code")) is not str:
            bad += 1  # still a refusal: taken as `internal`, as the protocol says
        rej.append((seq, item))
    batch = reply.get(BATCH_KEY, 0)
    if type(batch) is not int or batch < 0:
        bad, batch = bad + 1, 0
    return Reply(acc, rej, bad, reply.get("draining") is True, batch)


def seqs_in(lo: int, hi: int, *known: Collection[int]) -> Iterable[int]:
    """The seqs from ``lo`` to ``hi`` worth looking up: the range itself, or, when it is
    wider than the ``known`` seqs (a reply repeating a huge range), the known ones in it."""
    if hi - lo < sum(len(k) for k in known):
        return range(lo, hi + 1)
    return [s for k in known for s in k if lo <= s <= hi]
