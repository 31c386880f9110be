"""Batches from busd_client (docs/client.md "Batches"): what is due together goes out as one
batch, a message that can go at once goes alone and at once, and a busd that never said it
takes batches gets single messages only.

What goes on the wire is seen by a ``Relay``: a real ROUTER the publisher connects to, which
records every ZeroMQ message's frames and forwards them on a DEALER to a real busd (and the
replies back), so busd judges and answers every message. ``OldBusd`` is a real ROUTER
answering as a busd from before batches did (protocol version 1 without ``batch`` in its
replies: anything but three frames is ``bad_frame``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from busd_client import (
    AsyncPublisher,
    PoolPublisher,
    Publisher,
    Rejected,
    Subscriber,
)
from tests.conftest import wait_for

TOPIC = "release.batch.data"
PROBE = "release.batch.probe"


def release(i: int = 0) -> dict[str, Any]:
    return {"slug": "https://apps.example/shop/releases/42", "cmd": "bin/web", "env": {"N": str(i)}}


def item(i: int) -> tuple[str, str, int, dict[str, Any]]:
    return (TOPIC, "release", 2, release(i))


class _Peer(threading.Thread):
    """A ROUTER on loopback in its own thread, recording each publish: (frames, first seq)."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        super().__init__(daemon=True)
        self.front: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.front.bind_to_random_port('tcp://127.0.0.1')}"
        self.seen: list[tuple[int, int]] = []  # (frames after the identity, header seq)
        self._halt = threading.Event()

    def record(self, frames: list[bytes]) -> None:
        self.seen.append((len(frames) - 1, int.from_bytes(frames[1][2:], "big")))

    def shapes(self) -> list[int]:
        """Messages per publish, in order (a publish of 1 + 2K frames carries K)."""
        return [(n - 1) // 2 for n, _ in self.seen]

    def messages(self) -> int:
        return sum(self.shapes())

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Relay(_Peer):
    """Forwards every publish to busd unchanged and busd's replies back."""

    def __init__(self, ctx: zmq.Context[Any], busd_endpoint: str) -> None:
        super().__init__(ctx)
        self.back: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.back.setsockopt(zmq.LINGER, 0)
        self.back.connect(busd_endpoint)
        self.peer_id = b""

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        try:
            while not self._halt.is_set():
                for sock, _ in poller.poll(50):
                    if sock is self.front:
                        frames = self.front.recv_multipart()
                        self.peer_id = frames[0]
                        self.record(frames)
                        self.back.send_multipart(frames[1:])
                    else:
                        self.front.send_multipart([self.peer_id, self.back.recv()])
        finally:
            self.front.close(0)
            self.back.close(0)


class OldBusd(_Peer):
    """Answers like a busd without batches: three frames accepted, anything else bad_frame;
    no ``batch`` key in any reply."""

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                if not self.front.poll(50):
                    continue
                frames = self.front.recv_multipart()
                self.record(frames)
                seq = int.from_bytes(frames[1][2:], "big")
                if len(frames) == 4:
                    reply = {"acc": [[seq, seq]], "rej": []}
                else:
                    reason = f"expected 3 frames, got {len(frames) - 1}"
                    reply = {
                        "acc": [],
                        "rej": [{"seq": seq, "code": "bad_frame", "reason": reason}],
                    }
                self.front.send_multipart([frames[0], msgpack.packb(reply)])
        finally:
            self.front.close(0)


@pytest.fixture
def relay(busd: Any, zctx: zmq.Context[Any]) -> Iterator[Relay]:
    r = Relay(zctx, busd.pub_endpoint)
    r.start()
    yield r
    r.stop()


@pytest.fixture
def old_busd(zctx: zmq.Context[Any]) -> Iterator[OldBusd]:
    r = OldBusd(zctx)
    r.start()
    yield r
    r.stop()


def join(pub: Publisher, sub: Subscriber) -> None:
    """Probe until the subscription reached busd (and busd's first reply told the
    publisher that it takes batches)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pub.publish_wait(PROBE, "release", 2, release())
        if sub.recv(0.05) is not None:
            return
    raise AssertionError("the subscription never reached busd")


@pytest.mark.timeout(30)
def test_publish_many_goes_out_in_batches_each_message_judged_and_delivered(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """25 messages given together, max_batch 10: three publishes of 10, 10 and 5 messages,
    consecutive seqs; busd judges each (one invalid is refused alone) and subscribers get
    the 24 others in order, each with the envelope bytes the publisher sent."""
    with (
        Publisher(relay.endpoint, name="batcher", max_batch=10, context=zctx) as pub,
        Subscriber(busd.sub_endpoint, "release.batch.data", context=zctx) as sub,
        Subscriber(busd.sub_endpoint, PROBE, context=zctx) as probe_sub,
    ):
        join(pub, probe_sub)
        before = len(relay.seen)
        items = [item(i) for i in range(25)]
        items[7] = (TOPIC, "release", 2, {**release(7), "cmd": 1})  # invalid
        receipts = pub.publish_many(items)
        assert pub.flush(10) == [receipts[7].error]
        assert isinstance(receipts[7].error, Rejected) and receipts[7].error.code == "invalid"
        assert all(r.accepted for i, r in enumerate(receipts) if i != 7)
        assert relay.shapes()[before:] == [10, 10, 5]
        first = relay.seen[before][1]
        assert [s for _, s in relay.seen[before:]] == [first, first + 10, first + 20]
        assert [r.seq for r in receipts] == list(range(first, first + 25))
        got = [sub.recv(5) for _ in range(24)]
        assert [m.id for m in got if m is not None] == [
            r.id for i, r in enumerate(receipts) if i != 7
        ]


@pytest.mark.timeout(30)
def test_a_message_that_can_go_at_once_goes_alone_without_waiting_for_another(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """Once busd said it takes batches, a lone publish is still handed to the socket inside
    publish() itself (no second message is ever published), as one three-frame message."""
    with Publisher(relay.endpoint, name="lone", context=zctx) as pub:
        pub.publish_wait(TOPIC, "release", 2, release())
        assert pub._strategy.link.batch > 1  # busd said it takes batches
        before = len(relay.seen)
        r = pub.publish(TOPIC, "release", 2, release(1))
        assert r.attempts == 1  # sent before publish returned
        wait_for(lambda: len(relay.seen) > before, timeout=5, what="the lone message at busd")
        assert relay.seen[before:] == [(3, r.seq)]
        r.result(5)


@pytest.mark.timeout(30)
def test_a_paced_stream_hands_every_message_to_the_socket_inside_its_publish_call(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """Paced publishing (each message published once the one before is on its way to busd, replies
    arriving in between and read every READ_EVERY calls): every message is handed to the
    socket inside its own publish() call and goes alone; none waits for a later call."""
    with Publisher(relay.endpoint, name="paced", context=zctx) as pub:
        pub.publish_wait(TOPIC, "release", 2, release())
        assert pub._strategy.link.batch > 1  # busd said it takes batches
        before = len(relay.seen)
        receipts = []
        for i in range(100):  # past READ_EVERY (32) three times: the reply-reading path too
            r = pub.publish(TOPIC, "release", 2, release(i))
            assert r.attempts == 1, f"message {i} left publish() unsent"
            receipts.append(r)
            n = before + i + 1
            wait_for(lambda n=n: len(relay.seen) >= n, timeout=5, what=f"message {i} at busd")
        assert pub.flush(10) == []
        assert relay.seen[before:] == [(3, r.seq) for r in receipts]
        assert all(r.accepted for r in receipts)


@pytest.mark.timeout(30)
def test_async_and_pool_publishers_send_a_lone_message_at_once(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """The same for AsyncPublisher (sent before ``await publish`` returns) and
    PoolPublisher (sent inside publish when a broker is usable)."""

    async def lone_async() -> None:
        import zmq.asyncio

        actx = zmq.asyncio.Context.shadow(zctx.underlying)
        async with AsyncPublisher(relay.endpoint, name="lone", context=actx) as pub:
            await pub.publish_wait(TOPIC, "release", 2, release())
            before = len(relay.seen)
            r = await pub.publish(TOPIC, "release", 2, release(1))
            assert r.attempts == 1
            await r.result(5)
            assert relay.seen[before:] == [(3, r.seq)]

    asyncio.run(lone_async())
    with PoolPublisher([relay.endpoint], name="lone", context=zctx) as pool:
        pool.publish_wait(TOPIC, "release", 2, release())
        before = len(relay.seen)
        r = pool.publish(TOPIC, "release", 2, release(1))
        assert r.attempts == 1
        r.result(5)
        assert relay.seen[before:] == [(3, relay.seen[before][1])]


@pytest.mark.timeout(30)
def test_nothing_is_batched_before_busd_said_it_takes_batches(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """A fresh publisher has no reply yet: publish_many sends single messages; after busd's
    first reply (which carries ``batch``) the next publish_many is one batch."""
    with Publisher(relay.endpoint, name="fresh", context=zctx) as pub:
        first = pub.publish_many([item(i) for i in range(5)])
        assert pub.flush(10) == []
        assert relay.shapes() == [1, 1, 1, 1, 1]
        second = pub.publish_many([item(i) for i in range(5)])
        assert pub.flush(10) == []
        assert relay.shapes()[5:] == [5]
        assert all(r.accepted for r in first + second)


@pytest.mark.timeout(30)
def test_max_batch_1_sends_every_message_alone(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    with Publisher(relay.endpoint, name="single", max_batch=1, context=zctx) as pub:
        pub.publish_wait(TOPIC, "release", 2, release())
        receipts = pub.publish_many([item(i) for i in range(20)])
        assert pub.flush(10) == []
        assert all(r.accepted for r in receipts)
        assert relay.shapes() == [1] * 21


@pytest.mark.timeout(30)
def test_a_busd_without_batches_only_ever_gets_single_messages(
    old_busd: OldBusd, zctx: zmq.Context[Any]
) -> None:
    """Replies without ``batch`` (an older busd): publish_many, and messages queued behind a
    full window, go out one per ZeroMQ message, and every one is accepted."""
    with Publisher(old_busd.endpoint, name="compat", window=8, context=zctx) as pub:
        receipts = [pub.publish_wait(TOPIC, "release", 2, release())]
        receipts += pub.publish_many([item(i) for i in range(40)])
        receipts += [pub.publish(TOPIC, "release", 2, release(i)) for i in range(20)]
        assert pub.flush(10) == []
        assert all(r.accepted for r in receipts)
        assert old_busd.shapes() == [1] * 61


@pytest.mark.timeout(30)
def test_async_publishes_waiting_for_the_window_go_out_together(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """Natural batching: 60 tasks publish at once through a window of 5; those that waited
    for room are sent together when replies make room, in batches of more than one, and
    every message is accepted."""

    async def crowd() -> list[Any]:
        import zmq.asyncio

        actx = zmq.asyncio.Context.shadow(zctx.underlying)
        async with AsyncPublisher(relay.endpoint, name="crowd", window=5, context=actx) as pub:
            await pub.publish_wait(TOPIC, "release", 2, release())
            receipts = await asyncio.gather(
                *(pub.publish(TOPIC, "release", 2, release(i)) for i in range(60))
            )
            assert await pub.flush(10) == []
            return list(receipts)

    receipts = asyncio.run(crowd())
    assert all(r.accepted for r in receipts)
    shapes = relay.shapes()
    assert sum(shapes) == 61 and max(shapes) > 1
    assert max(shapes) <= 5  # the window counts messages, not batches


@pytest.mark.timeout(30)
def test_linger_holds_messages_to_fill_a_batch_until_flush(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """With a linger, publish returns before its message is sent; flush sends what lingers
    at once, as one batch."""
    with Publisher(relay.endpoint, name="linger", linger=60.0, context=zctx) as pub:
        pub.publish_wait(TOPIC, "release", 2, release())  # result() does not linger
        before = len(relay.seen)
        receipts = [pub.publish(TOPIC, "release", 2, release(i)) for i in range(3)]
        assert [r.attempts for r in receipts] == [0, 0, 0]
        assert len(relay.seen) == before
        assert pub.flush(10) == []
        assert relay.shapes()[before:] == [3]
        assert all(r.accepted for r in receipts)


@pytest.mark.timeout(30)
def test_pool_publisher_sends_messages_given_together_as_batches(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """PoolPublisher (one broker, through the relay): publish_many goes out in batches of
    at most max_batch, and busd accepts every message."""
    with PoolPublisher([relay.endpoint], name="pooled", max_batch=16, context=zctx) as pool:
        pool.publish_wait(TOPIC, "release", 2, release())
        before = len(relay.seen)
        receipts = pool.publish_many([item(i) for i in range(40)])
        assert pool.flush(10) == []
        assert all(r.accepted for r in receipts)
        assert relay.shapes()[before:] == [16, 16, 8]


@pytest.mark.timeout(30)
def test_async_linger_sends_a_batch_that_did_not_fill_once_linger_passed(
    busd: Any, relay: Relay, zctx: zmq.Context[Any]
) -> None:
    """AsyncPublisher's pump sends a lingering batch by itself when linger has passed:
    nobody flushes or awaits a receipt, and the three messages arrive as one batch."""

    async def lingering() -> None:
        import zmq.asyncio

        actx = zmq.asyncio.Context.shadow(zctx.underlying)
        async with AsyncPublisher(relay.endpoint, name="linger", linger=0.2, context=actx) as pub:
            await pub.publish_wait(TOPIC, "release", 2, release())
            before = len(relay.seen)
            receipts = [await pub.publish(TOPIC, "release", 2, release(i)) for i in range(3)]
            assert [r.attempts for r in receipts] == [0, 0, 0]
            await asyncio.to_thread(  # the loop stays free for the pump meanwhile
                wait_for, lambda: len(relay.seen) > before, timeout=5, what="the batch"
            )
            assert relay.shapes()[before:] == [3]
            for r in receipts:
                await r.result(5)

    asyncio.run(lingering())
