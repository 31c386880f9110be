"""The sync Subscriber against a real XPUB socket in the test."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
import zmq

from busd_client import Subscriber


def envelope(topic: str, id: str) -> bytes:
    return msgpack.packb(
        {
            "topic": topic,
            "schema": "s",
            "version": 1,
            "id": id,
            "publisher": "p",
            "ts": 1,
            "data": {"id": id},
        }
    )


@pytest.mark.timeout(10)
def test_subscriber_receives_only_subscribed_prefixes(zctx: Any) -> None:
    xpub = zctx.socket(zmq.XPUB)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    with Subscriber(f"tcp://127.0.0.1:{port}", ["a.", b"b."], context=zctx) as sub:
        got = set()
        while len(got) < 2:  # both subscriptions reach the XPUB
            assert xpub.poll(5000)
            got.add(xpub.recv())
        assert got == {b"\x01a.", b"\x01b."}
        for topic, id in (("c.x", "1"), ("a.x", "2"), ("b.y", "3")):
            xpub.send_multipart([topic.encode(), envelope(topic, id)])
        first, second = sub.recv(2), sub.recv(2)
        assert first is not None and second is not None
        assert [(first.topic, first.id), (second.topic, second.id)] == [("a.x", "2"), ("b.y", "3")]
        assert sub.recv(0.1) is None
    assert sub.closed
    xpub.close()


@pytest.mark.timeout(10)
def test_subscriber_skips_and_counts_malformed_messages(zctx: Any) -> None:
    xpub = zctx.socket(zmq.XPUB)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    with Subscriber(f"tcp://127.0.0.1:{port}", "", context=zctx) as sub:
        assert xpub.poll(5000) and xpub.recv() == b"\x01"
        xpub.send_multipart([b"t", b"\xc1"])
        xpub.send_multipart([b"t", envelope("other", "1")])  # topic frame differs
        xpub.send_multipart([b"t", envelope("t", "1"), b"extra"])
        xpub.send_multipart([b"t", envelope("t", "2")])
        it = iter(sub)
        message = next(it)
        assert message.id == "2" and message.envelope == envelope("t", "2")
        assert sub.bad_messages == 3
    xpub.close()


@pytest.mark.timeout(10)
def test_recv_timeout_returns_none_after_the_timeout(zctx: Any) -> None:
    xpub = zctx.socket(zmq.XPUB)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    with Subscriber(f"tcp://127.0.0.1:{port}", "", context=zctx) as sub:
        start = time.monotonic()
        assert sub.recv(0.2) is None
        assert 0.18 <= time.monotonic() - start < 2.0
    xpub.close()
