"""Frames and msgpack for protocol version 1 (docs/protocol.md §1-§2)."""

from __future__ import annotations

from typing import Any

import msgpack

from busd.kernel.codes import Code, Reject

MAGIC = 0x42  # ASCII "B"
PROTOCOL_VERSION = 1
HEADER_LEN = 10


def read_header(frame: bytes) -> tuple[int | None, Reject | None]:
    """A publisher's header frame: its sequence number whenever it can be read (also for
    another protocol version, so that refusal names the message), and why it is refused."""
    seq = (
        int.from_bytes(frame[2:], "big") if len(frame) == HEADER_LEN and frame[0] == MAGIC else None
    )
    if frame[:1] == b"B" and len(frame) >= 2 and frame[1] != PROTOCOL_VERSION:
        return seq, Reject(
            Code.UNSUPPORTED_PROTOCOL,
            f"protocol version {frame[1]} is not spoken here; busd speaks 1",
        )
    if seq is None:
        return None, Reject(Code.BAD_FRAME, "header frame must be 10 bytes: 'B', version, u64 seq")
    return seq, None


def parse_header(frame: bytes) -> int | Reject:
    """The sequence number of a good header frame, or why it is refused."""
    seq, reject = read_header(frame)
    if reject is not None:
        return reject
    assert seq is not None, "read_header gives a seq whenever it refuses nothing"
    return seq


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed")


def decode_envelope(frame: bytes) -> dict[str, Any] | Reject:
    """A msgpack map, or ``bad_encoding``."""
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except Exception as exc:
        return Reject(Code.BAD_ENCODING, f"envelope is not valid msgpack: {_short(exc)}")
    if type(value) is not dict:
        return Reject(Code.BAD_ENCODING, "envelope is not a msgpack map")
    # Keys are str or bytes (strict_map_key); a bytes key can never name one of the seven
    # fields, so it is passed through like any unknown key without a per-key check here.
    return value


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def encode_reply(acc: list[int], rejects: list[dict[str, Any]], draining: bool = False) -> bytes:
    """One reply frame; ``acc`` is flat ``[lo, hi, lo, hi, ...]``. ``draining`` adds the
    ``draining`` key (docs/protocol.md §2): busd is shutting down, publish elsewhere."""
    pairs = [acc[i : i + 2] for i in range(0, len(acc), 2)]
    reply: dict[str, Any] = {"acc": pairs, "rej": rejects}
    if draining:
        reply["draining"] = True
    frame: bytes = msgpack.packb(reply)
    return frame


def reject_entry(seq: int | None, reject: Reject) -> dict[str, Any]:
    entry: dict[str, Any] = {"seq": seq, "code": reject.code.value, "reason": reject.reason}
    if reject.extra:
        entry.update(reject.extra)
    return entry
