"""Every kind of bad input gets its stable code, is counted, and hurts nobody else."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any

import msgpack
import pytest
import zmq
from conftest import BusdProcess, TrackedContext, wait_for
from rawproto import collect, dealer, envelope, header, publish, subscriber, wait_subscribed

from busd_client.control import ControlClient

GOOD_TOPIC = b"release.shop"


def _env(**overrides: Any) -> bytes:
    env = envelope("release.shop")
    env.update(overrides)
    return msgpack.packb(env)


def _without(field: str) -> bytes:
    env = envelope("release.shop")
    del env[field]
    return msgpack.packb(env)


def _map(pairs: list[tuple[Any, bytes]]) -> bytes:
    """A msgpack map of already packed values, keys kept as given: duplicates stay (packb
    cannot write them)."""
    head = b"\xde" + len(pairs).to_bytes(2, "big")  # map 16
    return head + b"".join(msgpack.packb(k) + v for k, v in pairs)


def _packed(env: dict[str, Any]) -> list[tuple[Any, bytes]]:
    return [(k, msgpack.packb(v)) for k, v in env.items()]


def _dup(field: str, first: Any) -> bytes:
    """A valid envelope with ``field`` given twice: ``first``, then the valid value last."""
    env = envelope("release.shop")
    rest = [(k, v) for k, v in _packed(env) if k != field]
    return _map([*rest, (field, msgpack.packb(first)), (field, msgpack.packb(env[field]))])


def _dup_in_data() -> bytes:
    """A valid envelope whose payload gives ``cmd`` twice: an int first, the valid str last."""
    env = envelope("release.shop")
    data = _map([("cmd", msgpack.packb(42)), *_packed(env.pop("data"))])
    return _map([*_packed(env), ("data", data)])


def _with_raw(key: str, raw: bytes) -> bytes:
    """A valid envelope plus one extra key whose value is the raw msgpack ``raw``."""
    return _map([*_packed(envelope("release.shop")), (key, raw)])


# (name, frames after the DEALER's identity, expected code, expected seq in the reply)
CASES: list[tuple[str, list[bytes], str, int | None]] = [
    ("one frame", [header(1)], "bad_frame", 1),
    ("two frames", [header(2), GOOD_TOPIC], "bad_frame", 2),
    # A batch whose last topic has no envelope: seq 34 is judged as usual (bad_envelope,
    # so that nothing is forwarded), seq 35 is bad_frame (docs/protocol.md §1).
    ("four frames", [header(34), GOOD_TOPIC, _env(version=0), b"extra"], "bad_frame", 35),
    ("short header", [b"B\x01\x00", GOOD_TOPIC, _env()], "bad_frame", None),
    ("header not B", [b"X" * 10, GOOD_TOPIC, _env()], "bad_frame", None),
    ("protocol v2", [header(4, version=2), GOOD_TOPIC, _env()], "unsupported_protocol", 4),
    ("protocol v2, short header", [b"B\x02", GOOD_TOPIC, _env()], "unsupported_protocol", None),
    ("oversized envelope", [header(5), GOOD_TOPIC, _env(pad="x" * 70_000)], "too_large", 5),
    ("malformed msgpack", [header(6), GOOD_TOPIC, b"\xc1\xc1"], "bad_encoding", 6),
    ("truncated msgpack", [header(7), GOOD_TOPIC, _env()[:-3]], "bad_encoding", 7),
    ("trailing bytes", [header(8), GOOD_TOPIC, _env() + b"\x00"], "bad_encoding", 8),
    ("not a map", [header(9), GOOD_TOPIC, msgpack.packb([1, 2, 3])], "bad_encoding", 9),
    ("random bytes", [header(10), GOOD_TOPIC, os.urandom(64) + b"\xc1"], "bad_encoding", 10),
    (
        "ext type",
        [header(11), GOOD_TOPIC, msgpack.packb({"a": msgpack.ExtType(5, b"x")})],
        "bad_encoding",
        11,
    ),
    ("duplicate data", [header(26), GOOD_TOPIC, _dup("data", {"slug": 1})], "bad_encoding", 26),
    ("duplicate topic", [header(27), GOOD_TOPIC, _dup("topic", "other.topic")], "bad_encoding", 27),
    ("duplicate schema", [header(28), GOOD_TOPIC, _dup("schema", "nope")], "bad_encoding", 28),
    ("duplicate key inside data", [header(29), GOOD_TOPIC, _dup_in_data()], "bad_encoding", 29),
    (
        "timestamp ext in an extra key",
        [header(30), GOOD_TOPIC, _env(when=msgpack.Timestamp(1_700_000_000, 0))],
        "bad_encoding",
        30,
    ),
    (
        "timestamp ext nested in data",
        [header(31), GOOD_TOPIC, _env(data={"env": {"t": [msgpack.Timestamp(1, 5)]}})],
        "bad_encoding",
        31,
    ),
    ("empty ext", [header(32), GOOD_TOPIC, _with_raw("x", b"\xc7\x00\x05")], "bad_encoding", 32),
    (
        "fixext timestamp in an extra key",
        [header(33), GOOD_TOPIC, _with_raw("x", b"\xd6\xff\x00\x00\x00\x01")],
        "bad_encoding",
        33,
    ),
    ("non-utf8 string", [header(12), GOOD_TOPIC, b"\x81\xa1a\xa2\xff\xfe"], "bad_encoding", 12),
    ("empty topic", [header(13), b"", _env(topic="")], "bad_topic", 13),
    ("non-utf8 topic", [header(14), b"release.\xff", _env()], "bad_topic", 14),
    (
        "topic with space",
        [header(15), b"release shop", _env(topic="release shop")],
        "bad_topic",
        15,
    ),
    ("topic too long", [header(16), b"r" * 256, _env(topic="r" * 256)], "bad_topic", 16),
    ("topic mismatch", [header(17), b"release.other", _env()], "bad_topic", 17),
    ("missing data", [header(18), GOOD_TOPIC, _without("data")], "bad_envelope", 18),
    ("missing publisher", [header(19), GOOD_TOPIC, _without("publisher")], "bad_envelope", 19),
    ("version is a string", [header(20), GOOD_TOPIC, _env(version="2")], "bad_envelope", 20),
    ("version zero", [header(21), GOOD_TOPIC, _env(version=0)], "bad_envelope", 21),
    ("ts is a float", [header(22), GOOD_TOPIC, _env(ts=1.5)], "bad_envelope", 22),
    ("data is a list", [header(23), GOOD_TOPIC, _env(data=[1])], "bad_envelope", 23),
    ("publisher has a space", [header(24), GOOD_TOPIC, _env(publisher="a b")], "bad_envelope", 24),
    ("empty id", [header(25), GOOD_TOPIC, _env(id="")], "bad_envelope", 25),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "frames", "code", "seq"), CASES, ids=[c[0] for c in CASES])
def test_bad_message_gets_its_code(
    busd: BusdProcess,
    zctx: TrackedContext,
    name: str,
    frames: list[bytes],
    code: str,
    seq: int | None,
) -> None:
    """Each kind of malformed message is answered with its stable code and logged."""
    pub = dealer(zctx, busd.pub_endpoint)
    pub.send_multipart(frames)
    fates = collect(pub, 1)
    fate = fates[seq]
    assert fate["code"] == code, fate
    assert fate["reason"]
    busd.wait_log("message rejected", code=code)
    pub.close()


@pytest.mark.timeout(30)
def test_a_rejection_log_line_names_the_publisher_topic_schema_and_version(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """Besides code, reason and seq: who sent it, on which topic, claiming which schema."""
    pub = dealer(zctx, busd.pub_endpoint)
    bad = envelope("release.shop", publisher="svc-a", data={"cmd": 1})
    publish(pub, 1, "release.shop", bad)
    assert collect(pub, 1)[1]["code"] == "invalid"
    line = busd.wait_log("message rejected", code="invalid")
    assert line["level"] == "warning" and line["seq"] == 1
    assert (line["publisher"], line["topic"]) == ("svc-a", "release.shop")
    assert (line["schema"], line["version"]) == ("release", 2)
    pub.close()


@pytest.mark.timeout(30)
def test_the_culprit_fields_of_a_rejection_log_line_are_bounded(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """A hostile topic or publisher name cannot make a long log line: 64 characters each."""
    pub = dealer(zctx, busd.pub_endpoint)
    topic = "r" * 10_000
    publish(pub, 1, topic, envelope(topic, publisher="p" * 10_000, schema="s" * 10_000))
    assert collect(pub, 1)[1]["code"] == "bad_topic"
    line = busd.wait_log("message rejected", code="bad_topic")
    assert (line["topic"], line["publisher"], line["schema"]) == ("r" * 64, "p" * 64, "s" * 64)
    pub.close()


def _raw_tcp(port: int, payload: bytes) -> None:
    """Send ``payload`` on a plain TCP connection, read briefly, and hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        conn.settimeout(0.3)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while conn.recv(4096):
                pass


def _handshake_failures(busd: BusdProcess) -> dict[str, int]:
    with ControlClient(busd.control) as control:
        stats = control.call("stats")["stats"]
    return {role: stats[role]["handshake_failures"] for role in ("ingress", "egress")}


@pytest.mark.timeout(60)
def test_after_a_burst_of_every_bad_kind_good_traffic_still_flows(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """Raw TCP junk, an HTTP request, every bad message kind and a frame over the hard limit:
    busd survives, counts handshake failures, and a good publisher and subscriber work."""
    sub = subscriber(zctx, busd.sub_endpoint, "release.")
    wait_subscribed(zctx, busd.pub_endpoint, sub, "release.probe")
    good = dealer(zctx, busd.pub_endpoint)
    publish(good, 1, "release.before", envelope("release.before"))
    assert collect(good, 1)[1]["code"] == "accepted"

    _raw_tcp(busd.pub_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    _raw_tcp(busd.pub_port, os.urandom(512))
    _raw_tcp(busd.pub_port, b"\xff" + os.urandom(100))  # libzmq reports no failure event
    _raw_tcp(busd.sub_port, b"\xff" + os.urandom(100))
    wrong_type = zctx.socket(zmq.PUB)  # a ZeroMQ peer of a type ROUTER does not talk to
    wrong_type.connect(busd.pub_endpoint)
    bad = dealer(zctx, busd.pub_endpoint)
    for _, frames, _, _ in CASES:
        bad.send_multipart(frames)
    collect(bad, len(CASES))
    huge = dealer(zctx, busd.pub_endpoint)
    huge.send_multipart([header(1), GOOD_TOPIC, b"x" * (2 * 1024 * 1024)])  # over max_frame

    publish(good, 2, "release.after", envelope("release.after"))
    assert collect(good, 1)[2]["code"] == "accepted"
    topics = []
    deadline = time.monotonic() + 5
    while len(topics) < 2 and time.monotonic() < deadline:
        if sub.poll(200):
            topics.append(sub.recv_multipart()[0])
    assert topics == [b"release.before", b"release.after"]
    wrong_type.close()
    wait_for(
        lambda: _handshake_failures(busd) == {"ingress": 4, "egress": 1},
        what="every non-ZMTP or mismatched connection counted once",
    )
    assert any(line.get("event", "").startswith("handshake failed") for line in busd.logs())
    assert busd.proc is not None and busd.proc.poll() is None
    for sock in (sub, good, bad, huge):
        sock.close()


@pytest.mark.timeout(30)
def test_a_message_accepted_before_bad_input_is_still_delivered(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """Bad input interleaved with good messages on one connection never loses a good one."""
    sub = subscriber(zctx, busd.sub_endpoint, "release.")
    wait_subscribed(zctx, busd.pub_endpoint, sub, "release.probe")
    pub = dealer(zctx, busd.pub_endpoint)
    expected = []
    for seq in range(1, 201):
        if seq % 3 == 0:
            pub.send_multipart([header(seq), GOOD_TOPIC, b"\xc1"])
        else:
            publish(pub, seq, "release.mix", envelope("release.mix", id=str(seq)))
            expected.append(str(seq))
    fates = collect(pub, 200)
    assert [s for s, f in fates.items() if f["code"] == "accepted"] == [int(e) for e in expected]
    got = []
    while len(got) < len(expected) and sub.poll(3000):
        got.append(msgpack.unpackb(sub.recv_multipart()[1])["id"])
    assert got == expected
    pub.close()
    sub.close()


def test_zmq_frame_over_the_hard_limit_drops_only_that_connection(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """libzmq cuts a connection whose frame exceeds max_frame_bytes; others are untouched."""
    other = dealer(zctx, busd.pub_endpoint)
    huge = dealer(zctx, busd.pub_endpoint)
    huge.send_multipart([header(1), GOOD_TOPIC, b"x" * (2 * 1024 * 1024)])
    assert not huge.poll(500)  # no reply possible: the connection was dropped
    publish(other, 1)
    assert collect(other, 1)[1]["code"] == "accepted"
    other.close()
    huge.close()
