"""The client's codec: header frames, envelopes, egress decoding, reply rejections."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from busd_client import DecodeError, Disabled, Message, RateLimited, Rejected, decode_message
from busd_client.errors import rejection_from_reply
from busd_protocol.frames import encode_header
from busd_protocol.messages import encode_envelope, new_id


def test_header_is_magic_version_and_big_endian_seq() -> None:
    assert encode_header(1) == b"B\x01" + b"\x00" * 7 + b"\x01"
    assert encode_header(2**64 - 1) == b"B\x01" + b"\xff" * 8
    assert len(encode_header(12345)) == 10


def test_envelope_has_exactly_the_protocol_fields() -> None:
    raw = encode_envelope(
        "release.shop", "release", 2, {"cmd": "bin/web"}, id="abc", publisher="deployer", ts=17
    )
    assert msgpack.unpackb(raw) == {
        "topic": "release.shop",
        "schema": "release",
        "version": 2,
        "id": "abc",
        "publisher": "deployer",
        "ts": 17,
        "data": {"cmd": "bin/web"},
    }


def test_envelope_from_a_kept_packer_is_byte_for_byte_the_default_one() -> None:
    pack = msgpack.Packer().pack
    cases: list[tuple[str, str, int, dict[str, Any]]] = [
        ("release.shop", "release", 2, {"cmd": "bin/web", "env": {"A": "1"}, "n": [1, 2.5]}),
        ("t", "s", 1, {"bytes": b"\x00\xff", "none": None, "big": 2**63, "neg": -(2**63)}),
        ("ü.topic", "schema", 7, {"text": "é" * 300, "nested": {"deep": [{"x": True}]}}),
    ]
    for topic, schema, version, data in cases:
        kept = encode_envelope(
            topic, schema, version, data, id="a", publisher="p", ts=17, pack=pack
        )
        assert kept == encode_envelope(topic, schema, version, data, id="a", publisher="p", ts=17)
    with pytest.raises(TypeError):
        encode_envelope("t", "s", 1, {"x": object()}, id="i", publisher="p", pack=pack)
    # A packer that failed midway starts clean: the next envelope is not polluted.
    assert encode_envelope("t", "s", 1, {}, id="i", publisher="p", ts=1, pack=pack) == (
        encode_envelope("t", "s", 1, {}, id="i", publisher="p", ts=1)
    )


def test_envelope_ts_defaults_to_wall_clock_nanoseconds() -> None:
    import time

    before = time.time_ns()
    env = msgpack.unpackb(encode_envelope("t", "s", 1, {}, id="i", publisher="p"))
    assert before <= env["ts"] <= time.time_ns()


def test_new_ids_are_32_hex_digits_and_distinct() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_decode_message_ignores_unknown_keys_and_keeps_raw_bytes() -> None:
    env = {
        "topic": "a.b",
        "schema": "s",
        "version": 3,
        "id": "x",
        "publisher": "p",
        "ts": 5,
        "data": {"k": [1, 2]},
        "trace": "t-1",
    }
    raw = msgpack.packb(env)
    message = decode_message(b"a.b", raw)
    assert message == Message("a.b", "s", 3, "x", "p", 5, {"k": [1, 2]}, raw)
    assert message.to_dict() == {k: v for k, v in env.items() if k != "trace"}


@pytest.mark.parametrize(
    ("topic", "raw"),
    [
        (b"a", b"\xc1"),  # not msgpack
        (b"a", msgpack.packb([1, 2])),  # not a map
        (b"a", msgpack.packb({"topic": "a"}) + b"\x00"),  # trailing bytes
        (
            b"a",
            msgpack.packb(
                {
                    "topic": "b",
                    "schema": "s",
                    "version": 1,
                    "id": "i",
                    "publisher": "p",
                    "ts": 1,
                    "data": {},
                }
            ),
        ),  # topic mismatch
        (
            b"a",
            msgpack.packb(
                {
                    "topic": "a",
                    "schema": "s",
                    "version": "1",
                    "id": "i",
                    "publisher": "p",
                    "ts": 1,
                    "data": {},
                }
            ),
        ),  # wrong type
        (
            b"a",
            msgpack.packb(
                {"topic": "a", "schema": "s", "version": 1, "id": "i", "publisher": "p", "ts": 1}
            ),
        ),  # missing data
        (b"\xff", msgpack.packb({"topic": "a"})),  # topic not UTF-8
    ],
)
def test_decode_message_refuses_malformed_input(topic: bytes, raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(topic, raw)


def test_rate_limited_rejection_carries_key_and_retry_after() -> None:
    err = rejection_from_reply(
        {
            "seq": 4,
            "code": "rate_limited",
            "reason": "slow down",
            "key": "publish",
            "retry_after_ms": 120,
        }
    )
    assert isinstance(err, RateLimited)
    assert (err.code, err.reason, err.seq, err.key, err.retry_after_ms) == (
        "rate_limited",
        "slow down",
        4,
        "publish",
        120,
    )
    assert err.extra == {"key": "publish", "retry_after_ms": 120}


def test_disabled_rejection_carries_key() -> None:
    err = rejection_from_reply({"seq": 1, "code": "disabled", "reason": "off", "key": "k"})
    assert isinstance(err, Disabled)
    assert (err.code, err.key) == ("disabled", "k")


def test_unknown_code_is_a_plain_rejection() -> None:
    err = rejection_from_reply({"seq": None, "code": "new_code", "reason": "r", "x": 1})
    assert type(err) is Rejected
    assert (err.code, err.seq, err.extra) == ("new_code", None, {"x": 1})
    assert str(err) == "new_code: r"
