"""The client's hot paths give what the plain ones give: the publisher's envelope encoder
(``busd_protocol.messages.EnvelopeEncoder``, the core's inline join) and the subscriber's
frame-level receive."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import zmq

from busd_client import Subscriber
from busd_client.core import DEFAULT
from busd_client.publisher import Receipt
from busd_client.single_broker import single_broker_core
from busd_protocol.envelope import check_envelope
from busd_protocol.messages import EnvelopeEncoder, decode_envelope, encode_envelope
from busd_protocol.stamps import encode_stamp

DATA: dict[str, Any] = {"slug": "https://apps.example/x", "cmd": "bin/web", "env": {"A": "é"}}
CASES: list[tuple[Any, Any, Any, Any, str, int]] = [
    ("release.shop", "release", 2, DATA, "0123456789abcdef0000000001", 1_796_183_368_090_120_938),
    ("release.shöp", "release", 2, {}, "x" * 128, 0),  # a long id: str8
    ("t", "s", 2**40, {"n": [1, 2.5, None, True]}, "id", 2**64 - 1),
    ("t", "s", True, DATA, "id", 5),  # not an int version: the plain encoding
    ("t", "s", 1, DATA, "id", -1),  # a ts out of uint64: the plain encoding (busd refuses)
    ("t", "s", 1.0, DATA, "id", 7),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("topic", "schema", "version", "data", "id", "ts"), CASES)
def test_envelope_encoder_gives_the_fields_encode_envelope_gives(
    topic: Any, schema: Any, version: Any, data: Any, id: str, ts: int
) -> None:
    """busd's strict decode reads the same seven fields, with the same msgpack types, from
    the encoder's bytes as from encode_envelope's; the core's inline join is the encoder's."""
    plain = encode_envelope(topic, schema, version, data, id=id, publisher="pub", ts=ts)
    encoder = EnvelopeEncoder("pub")
    fast = encoder.encode(topic, schema, version, data, id, ts)
    again = encoder.encode(topic, schema, version, data, id, ts)  # from the remembered head
    decoded = decode_envelope(fast)
    assert isinstance(decoded, dict)
    expected = decode_envelope(plain)
    assert decoded == expected and again == fast
    assert [(k, type(v)) for k, v in sorted(decoded.items())] == [
        (k, type(v)) for k, v in sorted(expected.items())
    ]
    core = single_broker_core(
        "tcp://127.0.0.1:9",
        1.0,
        name="pub",
        window=10,
        retry_deadline=None,
        wait_when_disabled=False,
    )
    p = core.compose(Receipt, topic, schema, version, data, id, DEFAULT, DEFAULT, 0.0, ts)
    assert p.envelope == fast


@pytest.mark.timeout(10)
def test_encoder_envelopes_pass_busds_envelope_check() -> None:
    env = decode_envelope(EnvelopeEncoder("pub").encode(*CASES[0]))
    assert isinstance(env, dict)
    assert check_envelope("release.shop", env) is None


@pytest.mark.timeout(10)
def test_subscriber_reads_every_frame_shape_without_losing_its_place(
    zctx: zmq.Context[Any],
) -> None:
    """Three frames (busd), two (an older busd), four, a bad stamp and one frame alone:
    each is read whole, the bad ones counted, and the next message is still read right."""
    xpub: zmq.Socket[bytes] = zctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")

    def env(i: int) -> bytes:
        return encode_envelope("t", "s", 1, {"i": i}, id=str(i), publisher="p", ts=1)

    with Subscriber(f"tcp://127.0.0.1:{port}", "t", context=zctx) as sub:
        assert xpub.poll(5000)  # the subscription arrived
        xpub.recv()
        xpub.send_multipart([b"t", env(1), encode_stamp(9, 1)])
        xpub.send_multipart([b"t", env(2), encode_stamp(9, 2), b"extra"])  # four: bad
        xpub.send_multipart([b"t", env(3)])  # two: an older busd
        xpub.send_multipart([b"t", env(4), b"short"])  # not a stamp: bad
        xpub.send(b"t")  # one frame: bad
        xpub.send_multipart([b"t", env(5), encode_stamp(9, 3)])
        got = [sub.recv(5) for _ in range(3)]
        assert [m.id for m in got if m is not None] == ["1", "3", "5"]
        assert sub.bad_messages == 3
        assert sub.recv(0.05) is None
        assert msgpack.unpackb(got[0].envelope if got[0] else b"\x80")["id"] == "1"
    xpub.close(0)


@pytest.mark.timeout(10)
def test_decode_message_gives_the_message_its_constructor_gives() -> None:
    """decode_message fills Message's slots directly: the value is equal to (and hashes,
    compares and stays frozen like) one built by Message(...)."""
    import dataclasses

    from busd_protocol.messages import Message, decode_message

    body = encode_envelope("t.x", "s", 3, {"a": [1]}, id="i", publisher="p", ts=9)
    got = decode_message(b"t.x", body)
    assert got == Message("t.x", "s", 3, "i", "p", 9, {"a": [1]}, body)
    assert type(got) is Message and got.to_dict()["data"] == {"a": [1]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.topic = "other"  # type: ignore[misc]
