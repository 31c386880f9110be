"""Publish-one / subscribe-many on real sockets, spoken from docs/protocol.md alone."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq
from conftest import BusdProcess, TrackedContext
from rawproto import collect, dealer, envelope, publish, subscriber, wait_subscribed


@pytest.mark.timeout(30)
def test_raw_dealer_and_sub_written_from_the_protocol_document_publish_and_receive(
    busd_each_loop: BusdProcess, zctx: TrackedContext
) -> None:
    """A DEALER and a SUB that know only docs/protocol.md publish and receive."""
    busd = busd_each_loop
    sub = subscriber(zctx, busd.sub_endpoint, "release.")
    wait_subscribed(zctx, busd.pub_endpoint, sub, "release.probe")
    pub = dealer(zctx, busd.pub_endpoint)
    env = envelope("release.shop", id="m-1")
    raw = msgpack.packb(env)
    publish(pub, 1, "release.shop", raw)
    assert collect(pub, 1) == {1: {"code": "accepted"}}
    assert sub.poll(5000)
    topic, body, stamp = sub.recv_multipart()
    assert topic == b"release.shop"
    assert len(stamp) == 16  # epoch and sequence number (docs/protocol.md §3)
    assert body == raw  # forwarded byte for byte, never re-encoded
    assert msgpack.unpackb(body)["data"]["flag"] == "extra_cpu"
    pub.close()
    sub.close()


@pytest.mark.timeout(60)
def test_ten_thousand_messages_from_three_publishers_reach_three_subscribers_in_order(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """10,000 messages from 3 concurrent publishers reach each of 3 subscribers, complete,
    with each publisher's order kept."""
    total, publishers = 10_000, 3
    per_pub = [
        total // publishers + (1 if i < total % publishers else 0) for i in range(publishers)
    ]
    subs = [subscriber(zctx, busd.sub_endpoint, "release.") for _ in range(3)]
    for sub in subs:
        wait_subscribed(zctx, busd.pub_endpoint, sub, "release.probe")
    fates: list[dict[int | None, dict[str, object]]] = [{} for _ in range(publishers)]

    def run(index: int) -> None:
        sock = dealer(zctx, busd.pub_endpoint)
        try:
            for seq in range(1, per_pub[index] + 1):
                publish(
                    sock,
                    seq,
                    "release.load",
                    envelope("release.load", id=f"{index}:{seq}", publisher=f"p{index}"),
                )
            fates[index] = collect(sock, per_pub[index], timeout=40)
        finally:
            sock.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    received: list[list[str]] = [[] for _ in subs]
    deadline = time.monotonic() + 40
    for i, sub in enumerate(subs):
        while len(received[i]) < total and time.monotonic() < deadline:
            if sub.poll(200):
                _, body, _ = sub.recv_multipart()
                msg_id = msgpack.unpackb(body)["id"]
                if msg_id != "probe":  # another subscriber's slow-joiner probe
                    received[i].append(msg_id)
    for t in threads:
        t.join(30)
    for index in range(publishers):
        assert len(fates[index]) == per_pub[index]
        assert all(f["code"] == "accepted" for f in fates[index].values())
    for ids in received:
        assert len(ids) == total
        for index in range(publishers):
            seqs = [int(i.split(":")[1]) for i in ids if i.startswith(f"{index}:")]
            assert seqs == list(range(1, per_pub[index] + 1))
    for sub in subs:
        sub.close()


@pytest.mark.timeout(30)
def test_subscribers_with_different_prefixes_get_exactly_their_topics(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """Prefix filtering: each subscriber sees its topics and nothing else."""
    release = subscriber(zctx, busd.sub_endpoint, "release.")
    instance = subscriber(zctx, busd.sub_endpoint, "instance.")
    everything = subscriber(zctx, busd.sub_endpoint, "")
    wait_subscribed(zctx, busd.pub_endpoint, release, "release.probe")
    wait_subscribed(zctx, busd.pub_endpoint, instance, "instance.probe")
    wait_subscribed(zctx, busd.pub_endpoint, everything, "instance.probe")
    while everything.poll(200):
        everything.recv_multipart()  # the release probe, if it arrived late
    pub = dealer(zctx, busd.pub_endpoint)
    topics = ["release.a", "instance.a", "release.b", "other.x", "instance.b"]
    for seq, topic in enumerate(topics, 1):
        publish(pub, seq, topic, envelope(topic, id=f"t{seq}"))
    fates = collect(pub, len(topics))
    assert fates[4]["code"] == "schema_not_allowed"  # release events may not ride on other.x

    def drain(sock: zmq.Socket[bytes], expect: int) -> list[str]:
        got: list[str] = []
        while len(got) < expect and sock.poll(3000):
            got.append(sock.recv_multipart()[0].decode())
            got = [t for t in got if not t.endswith(".probe")]  # slow-joiner probes
        while sock.poll(200):  # nothing more may arrive
            got.append(sock.recv_multipart()[0].decode())
        return [t for t in got if not t.endswith(".probe")]

    accepted = [t for seq, t in enumerate(topics, 1) if fates[seq]["code"] == "accepted"]
    assert drain(release, 2) == [t for t in accepted if t.startswith("release.")]
    assert drain(instance, 2) == [t for t in accepted if t.startswith("instance.")]
    assert drain(everything, len(accepted)) == accepted
    for sock in (pub, release, instance, everything):
        sock.close()
