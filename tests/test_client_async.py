"""AsyncPublisher and AsyncSubscriber against real ROUTER / XPUB sockets in the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from busd_client import (
    AsyncPublisher,
    AsyncSubscriber,
    ClosedError,
    PublishTimeout,
    RateLimited,
    Rejected,
)


class Peer:
    """A bound ROUTER playing busd; blocking calls go through ``asyncio.to_thread``."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.ident = b""

    def recv(self, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        assert self.sock.poll(int(timeout * 1000)), "no message reached the peer"
        ident, header, _topic, env = self.sock.recv_multipart()
        self.ident = ident
        return int.from_bytes(header[2:], "big"), msgpack.unpackb(env)

    async def arecv(self, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:  # noqa: ASYNC109
        return await asyncio.to_thread(self.recv, timeout)

    def reply(
        self, acc: list[list[int]] | None = None, rej: list[dict[str, Any]] | None = None
    ) -> None:
        self.sock.send_multipart([self.ident, msgpack.packb({"acc": acc or [], "rej": rej or []})])


@pytest.fixture
def peer(zctx: zmq.Context[Any]) -> Iterator[Peer]:
    p = Peer(zctx)
    yield p
    p.sock.close(linger=0)


@pytest.fixture
async def actx() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.term()  # hangs (and the test times out) if a socket was left open


@pytest.mark.timeout(10)
async def test_async_batched_reply_settles_each_receipt(peer: Peer, actx: Any) -> None:
    async with AsyncPublisher(peer.endpoint, name="a", context=actx, timeout=2) as pub:
        receipts = [await pub.publish("t", "s", 1, {"i": i}) for i in range(4)]
        for i in range(4):
            assert (await peer.arecv())[0] == i + 1
        peer.reply(acc=[[1, 2], [4, 4]], rej=[{"seq": 3, "code": "bad_topic", "reason": "r"}])
        await receipts[0]
        await receipts[3].result(2)
        with pytest.raises(Rejected) as info:
            await receipts[2]
        assert info.value.code == "bad_topic" and info.value.id == receipts[2].id
        assert await pub.flush(2) == []  # the one failure was already raised by await


@pytest.mark.timeout(10)
async def test_async_silent_broker_times_out(peer: Peer, actx: Any) -> None:
    async with AsyncPublisher(peer.endpoint, name="a", context=actx, timeout=0.3) as pub:
        start = time.monotonic()
        r = await pub.publish("t", "s", 1, {})
        await peer.arecv()
        with pytest.raises(PublishTimeout) as info:
            await r
        assert info.value.sent is True
        assert 0.25 <= time.monotonic() - start < 2.0


@pytest.mark.timeout(10)
async def test_async_no_broker_raises_unsent_timeout(tmp_path: Path, actx: Any) -> None:
    # ipc, not a closed tcp port: a tcp connect to a free port can connect to itself.
    async with AsyncPublisher(f"ipc://{tmp_path}/none", name="a", context=actx, timeout=0.3) as pub:
        with pytest.raises(PublishTimeout) as info:
            await pub.publish("t", "s", 1, {})
        assert info.value.sent is False


@pytest.mark.timeout(10)
async def test_async_rate_limited_is_retried_with_same_id(peer: Peer, actx: Any) -> None:
    async with AsyncPublisher(
        peer.endpoint, name="a", context=actx, timeout=2, retry_deadline=3
    ) as pub:
        r = await pub.publish("t", "s", 1, {})
        seq1, env1 = await peer.arecv()
        peer.reply(
            rej=[
                {
                    "seq": seq1,
                    "code": "rate_limited",
                    "reason": "slow",
                    "key": "publish",
                    "retry_after_ms": 100,
                }
            ]
        )
        seq2, env2 = await peer.arecv()
        peer.reply(acc=[[seq2, seq2]])
        await r.result(2)
        assert (seq1, seq2) == (1, 2) and env1["id"] == env2["id"] and r.attempts == 2


@pytest.mark.timeout(10)
async def test_async_rate_limited_without_deadline_raises(peer: Peer, actx: Any) -> None:
    async with AsyncPublisher(peer.endpoint, name="a", context=actx) as pub:
        r = await pub.publish("t", "s", 1, {})
        await peer.arecv()
        peer.reply(
            rej=[
                {
                    "seq": 1,
                    "code": "rate_limited",
                    "reason": "slow",
                    "key": "publish",
                    "retry_after_ms": 100,
                }
            ]
        )
        with pytest.raises(RateLimited):
            await r.result(2)


@pytest.mark.timeout(10)
async def test_async_window_holds_publish_until_replies(peer: Peer, actx: Any) -> None:
    async with AsyncPublisher(peer.endpoint, name="a", context=actx, window=3, timeout=3) as pub:
        for i in range(3):
            await pub.publish("t", "s", 1, {"i": i})
        fourth = asyncio.ensure_future(pub.publish("t", "s", 1, {"i": 3}))
        for _ in range(3):
            await peer.arecv()
        await asyncio.sleep(0.2)  # give a wrongly unblocked publish the chance to show
        assert not fourth.done()
        peer.reply(acc=[[1, 3]])
        r4 = await asyncio.wait_for(fourth, 2)
        seq, _ = await peer.arecv()
        assert seq == 4
        peer.reply(acc=[[4, 4]])
        await r4
        assert await pub.flush(2) == []


@pytest.mark.timeout(10)
async def test_async_close_fails_pending_with_closed_error(peer: Peer, actx: Any) -> None:
    pub = AsyncPublisher(peer.endpoint, name="a", context=actx)
    r = await pub.publish("t", "s", 1, {})
    await peer.arecv()
    failures = await pub.close(timeout=0.1)
    assert [type(e) for e in failures] == [ClosedError]
    with pytest.raises(ClosedError):
        await r
    with pytest.raises(ClosedError):
        await pub.publish("t", "s", 1, {})


@pytest.mark.timeout(10)
async def test_async_subscriber_decodes_and_filters_by_prefix(zctx: Any, actx: Any) -> None:
    xpub = zctx.socket(zmq.XPUB)
    try:
        port = xpub.bind_to_random_port("tcp://127.0.0.1")
        async with AsyncSubscriber(f"tcp://127.0.0.1:{port}", ["a."], context=actx) as sub:
            assert xpub.poll(5000)
            assert xpub.recv() == b"\x01a."  # the subscription reached the "broker"
            env = {
                "topic": "a.x",
                "schema": "s",
                "version": 1,
                "id": "i1",
                "publisher": "p",
                "ts": 1,
                "data": {"k": 1},
                "extra": True,
            }
            xpub.send_multipart([b"a.x", b"\xc1"])  # undecodable: skipped, counted
            xpub.send_multipart([b"a.x", msgpack.packb(env)])
            message = await sub.recv(timeout=2)
            assert message is not None
            assert (message.topic, message.id, message.data) == ("a.x", "i1", {"k": 1})
            assert sub.bad_messages == 1
            assert await sub.recv(timeout=0.1) is None
    finally:
        xpub.close(linger=0)


@pytest.mark.timeout(10)
async def test_async_publish_waits_for_a_broker_that_binds_late_and_sends_once_it_is_there(
    tmp_path: Path, zctx: Any, actx: Any
) -> None:
    endpoint = f"ipc://{tmp_path}/late"
    async with AsyncPublisher(
        endpoint, name="late", timeout=5.0, context=actx, reconnect_ivl=0.05
    ) as pub:
        publishing = asyncio.ensure_future(pub.publish("t", "s", 1, {"n": 1}))
        deadline = time.monotonic() + 5.0
        while pub.pending == 0:
            assert time.monotonic() < deadline, "the publish never started waiting"
            await asyncio.sleep(0.005)
        assert not publishing.done()  # nobody listens yet: publish waits for a connection
        sock: zmq.Socket[bytes] = zctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        try:
            r = await asyncio.wait_for(publishing, 5)
            assert (r.seq, r.attempts, r.done()) == (1, 1, False)
            assert await asyncio.to_thread(sock.poll, 5000)
            ident, _header, _topic, env = sock.recv_multipart()
            assert msgpack.unpackb(env)["id"] == r.id
            sock.send_multipart([ident, msgpack.packb({"acc": [[1, 1]], "rej": []})])
            assert await pub.flush(5) == [] and r.accepted
        finally:
            sock.close(linger=0)
