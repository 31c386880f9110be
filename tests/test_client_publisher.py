"""The sync Publisher against a real ROUTER socket standing in for busd.

The test plays busd, so it decides exactly which replies come back and when.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from busd_client import Disabled, Publisher, PublishTimeout, RateLimited, Rejected
from busd_client.errors import ClosedError


class Peer:
    """A bound ROUTER speaking the busd side of the protocol, driven by the test."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.ident = b""

    def recv(self, timeout: float = 5.0) -> tuple[int, str, dict[str, Any], list[bytes]]:
        """One published message: (seq, topic, decoded envelope, raw frames)."""
        assert self.sock.poll(int(timeout * 1000)), "no message reached the peer"
        frames = self.sock.recv_multipart()
        self.ident = frames[0]
        header, topic, env = frames[1:]
        assert header[:2] == b"B\x01" and len(header) == 10
        return int.from_bytes(header[2:], "big"), topic.decode(), msgpack.unpackb(env), frames[1:]

    def idle(self, seconds: float) -> bool:
        """True when nothing arrives for ``seconds``."""
        return not self.sock.poll(int(seconds * 1000))

    def reply(
        self, acc: list[list[int]] | None = None, rej: list[dict[str, Any]] | None = None
    ) -> None:
        self.send_raw(msgpack.packb({"acc": acc or [], "rej": rej or []}))

    def send_raw(self, frame: bytes) -> None:
        self.sock.send_multipart([self.ident, frame])


@pytest.fixture
def peer(zctx: zmq.Context[Any]) -> Iterator[Peer]:
    p = Peer(zctx)
    yield p
    p.sock.close(linger=0)


def make(peer: Peer, ctx: zmq.Context[Any], **kw: Any) -> Publisher:
    kw.setdefault("timeout", 2.0)
    return Publisher(peer.endpoint, name="tester", context=ctx, **kw)


@pytest.mark.timeout(10)
def test_publish_sends_three_frames_with_seq_counting_from_one(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx) as pub:
        receipts = [pub.publish("release.shop", "release", 2, {"n": i}) for i in range(3)]
        for i, r in enumerate(receipts):
            seq, topic, env, frames = peer.recv()
            assert seq == i + 1 == r.seq
            assert frames[0] == b"B\x01" + (i + 1).to_bytes(8, "big")
            assert topic == "release.shop"
            assert env["id"] == r.id
            assert {k: env[k] for k in ("topic", "schema", "version", "publisher", "data")} == {
                "topic": "release.shop",
                "schema": "release",
                "version": 2,
                "publisher": "tester",
                "data": {"n": i},
            }
        assert len({r.id for r in receipts}) == 3
        assert not any(r.done() for r in receipts)
        peer.reply(acc=[[1, 3]])
        assert pub.flush(2) == []
        assert all(r.accepted for r in receipts)


@pytest.mark.timeout(10)
def test_batched_reply_settles_ranges_and_rejections(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx) as pub:
        receipts = [pub.publish("t", "s", 1, {}) for _ in range(6)]
        for _ in range(6):
            peer.recv()
        peer.reply(
            acc=[[1, 2], [4, 5]],
            rej=[
                {"seq": 3, "code": "invalid", "reason": "data.x: expected int"},
                {"seq": 6, "code": "unknown_schema", "reason": "no schema s"},
            ],
        )
        failures = pub.flush(2)
        assert [r.accepted for r in receipts] == [True, True, False, True, True, False]
        assert [(e.code, e.id) for e in failures if isinstance(e, Rejected)] == [
            ("invalid", receipts[2].id),
            ("unknown_schema", receipts[5].id),
        ]
        with pytest.raises(Rejected) as info:
            receipts[2].result()
        assert (info.value.code, info.value.reason, info.value.seq) == (
            "invalid",
            "data.x: expected int",
            3,
        )
        assert pub.flush(1) == []  # failures are handed out once


@pytest.mark.timeout(10)
def test_flush_leaves_out_errors_already_raised_by_result(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx) as pub:
        seen, unseen = pub.publish("t", "s", 1, {}), pub.publish("t", "s", 1, {})
        peer.recv()
        peer.recv()
        peer.reply(
            rej=[
                {"seq": 1, "code": "invalid", "reason": "a"},
                {"seq": 2, "code": "invalid", "reason": "b"},
            ]
        )
        with pytest.raises(Rejected):
            seen.result(2)
        assert [e.id for e in pub.flush(2)] == [unseen.id]


@pytest.mark.timeout(10)
def test_silent_broker_times_out_with_fate_unknown(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx, timeout=0.3) as pub:
        start = time.monotonic()
        r = pub.publish("t", "s", 1, {})
        peer.recv()
        with pytest.raises(PublishTimeout) as info:
            r.result()
        assert 0.25 <= time.monotonic() - start < 2.0
        assert info.value.sent is True
        assert info.value.id == r.id


@pytest.mark.timeout(10)
def test_late_reply_after_timeout_is_ignored(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx, timeout=0.2) as pub:
        r1 = pub.publish("t", "s", 1, {})
        peer.recv()
        assert isinstance(pub.flush(2)[0], PublishTimeout)
        r2 = pub.publish("t", "s", 1, {})
        peer.recv()
        peer.reply(acc=[[1, 2]])  # seq 1 comes too late; seq 2 in time
        assert pub.flush(2) == []
        assert r2.accepted and isinstance(r1.error, PublishTimeout)


@pytest.mark.timeout(10)
def test_no_broker_makes_publish_raise_unsent_timeout(tmp_path: Path, zctx: Any) -> None:
    # ipc, not a closed tcp port: a tcp connect to a free port can connect to itself.
    with Publisher(f"ipc://{tmp_path}/none", name="x", timeout=0.3, context=zctx) as pub:
        start = time.monotonic()
        with pytest.raises(PublishTimeout) as info:
            pub.publish("t", "s", 1, {})
        assert info.value.sent is False
        assert 0.25 <= time.monotonic() - start < 2.0
        assert pub.pending == 0


@pytest.mark.timeout(10)
def test_rate_limited_is_resent_with_same_id_and_new_seq(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx, retry_deadline=3.0) as pub:
        r = pub.publish("t", "s", 1, {"a": 1})
        seq1, _, env1, _ = peer.recv()
        sent_back = time.monotonic()
        peer.reply(
            rej=[
                {
                    "seq": seq1,
                    "code": "rate_limited",
                    "reason": "slow",
                    "key": "publish",
                    "retry_after_ms": 200,
                }
            ]
        )
        t = threading.Thread(target=lambda: r.result(5))
        t.start()
        seq2, _, env2, _ = peer.recv()
        assert time.monotonic() - sent_back >= 0.19
        peer.reply(acc=[[seq2, seq2]])
        t.join(5)
        assert (seq1, seq2) == (1, 2)
        assert env2["id"] == env1["id"] and env2 == env1
        assert r.accepted and r.attempts == 2


@pytest.mark.timeout(10)
def test_rate_limited_without_retry_deadline_raises_at_once(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx) as pub:
        r = pub.publish("t", "s", 1, {})
        peer.recv()
        peer.reply(
            rej=[
                {
                    "seq": 1,
                    "code": "rate_limited",
                    "reason": "slow",
                    "key": "publish.t",
                    "retry_after_ms": 50,
                }
            ]
        )
        with pytest.raises(RateLimited) as info:
            r.result(2)
        assert (info.value.key, info.value.retry_after_ms) == ("publish.t", 50)
        assert peer.idle(0.2)


@pytest.mark.timeout(10)
def test_rate_limited_beyond_retry_deadline_raises_at_once(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx, retry_deadline=0.5) as pub:
        r = pub.publish("t", "s", 1, {})
        peer.recv()
        peer.reply(
            rej=[
                {
                    "seq": 1,
                    "code": "rate_limited",
                    "reason": "slow",
                    "key": "publish",
                    "retry_after_ms": 10_000,
                }
            ]
        )
        start = time.monotonic()
        with pytest.raises(RateLimited):
            r.result(2)
        assert time.monotonic() - start < 0.4


@pytest.mark.timeout(10)
def test_disabled_raises_at_once_by_default(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx, retry_deadline=5.0) as pub:
        r = pub.publish("t", "s", 1, {})
        peer.recv()
        peer.reply(rej=[{"seq": 1, "code": "disabled", "reason": "off", "key": "publish"}])
        with pytest.raises(Disabled) as info:
            r.result(2)
        assert info.value.key == "publish"


@pytest.mark.timeout(10)
def test_wait_when_disabled_retries_every_quarter_second_until_deadline(
    peer: Peer, zctx: Any
) -> None:
    with make(peer, zctx, retry_deadline=0.9, wait_when_disabled=True) as pub:
        r = pub.publish("t", "s", 1, {})
        attempts: list[float] = []

        def refuse_all() -> None:
            while True:
                try:
                    seq, *_ = peer.recv(timeout=1.5)
                except AssertionError:
                    return
                attempts.append(time.monotonic())
                peer.reply(
                    rej=[{"seq": seq, "code": "disabled", "reason": "off", "key": "publish"}]
                )

        refuser = threading.Thread(target=refuse_all)
        refuser.start()
        with pytest.raises(Disabled):
            r.result(5)
        refuser.join(5)
        assert 3 <= len(attempts) <= 4  # at 0, ~0.25, ~0.5, ~0.75 s
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert all(g >= 0.24 for g in gaps)


@pytest.mark.timeout(10)
def test_window_makes_publish_wait_until_replies_arrive(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx, window=4) as pub:
        released = threading.Event()
        seen: list[int] = []

        def broker() -> None:
            for _ in range(4):
                seen.append(peer.recv()[0])
            assert peer.idle(0.3)  # the fifth publish is held back by the window
            released.set()
            peer.reply(acc=[[1, 4]])
            seen.append(peer.recv()[0])
            peer.reply(acc=[[5, 5]])

        t = threading.Thread(target=broker)
        t.start()
        for i in range(5):
            pub.publish("t", "s", 1, {"i": i})
            if i == 4:
                assert released.is_set()
        assert pub.flush(3) == []
        t.join(5)
        assert seen == [1, 2, 3, 4, 5]


@pytest.mark.timeout(10)
def test_malformed_replies_are_counted_and_ignored(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx) as pub:
        r = pub.publish("t", "s", 1, {})
        peer.recv()
        for junk in (
            b"\xc1",
            msgpack.packb([1]),
            msgpack.packb({"acc": [[1]]}),
            msgpack.packb({"acc": [["a", "b"]], "rej": [7]}),
        ):
            peer.send_raw(junk)
        # A range beyond what was sent is refused whole: it cannot settle a message busd
        # never answered (it used to be clamped, and accepted the message).
        peer.reply(acc=[[0, 2**64 - 1]])
        with pytest.raises(PublishTimeout):
            r.result(timeout=0.3)
        assert not r.done()
        peer.reply(acc=[[1, 1]])
        assert pub.flush(2) == []
        assert r.accepted
        assert pub.bad_replies == 6


@pytest.mark.timeout(10)
def test_close_fails_pending_messages_with_closed_error(peer: Peer, zctx: Any) -> None:
    pub = make(peer, zctx)
    r = pub.publish("t", "s", 1, {})
    peer.recv()
    failures = pub.close(timeout=0.1)
    assert [type(e) for e in failures] == [ClosedError]
    assert isinstance(r.error, ClosedError)
    with pytest.raises(ClosedError):
        pub.publish("t", "s", 1, {})


@pytest.mark.timeout(10)
def test_flush_with_short_timeout_raises_and_keeps_messages_pending(peer: Peer, zctx: Any) -> None:
    with make(peer, zctx) as pub:
        r = pub.publish("t", "s", 1, {})
        peer.recv()
        with pytest.raises(PublishTimeout):
            pub.flush(0.1)
        assert not r.done() and pub.pending == 1
        peer.reply(acc=[[1, 1]])
        assert pub.flush(2) == [] and r.accepted


def test_bad_publisher_name_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="publisher name"):
        Publisher("tcp://127.0.0.1:1", name="has space")


@pytest.mark.timeout(10)
def test_publish_waits_for_a_broker_that_binds_late_and_sends_once_it_is_there(
    tmp_path: Path, zctx: Any
) -> None:
    endpoint = f"ipc://{tmp_path}/late"
    bound: list[zmq.Socket[bytes]] = []
    with Publisher(endpoint, name="late", timeout=5.0, context=zctx, reconnect_ivl=0.05) as pub:

        def bind_once_the_publish_waits() -> None:
            deadline = time.monotonic() + 5.0
            while pub.pending == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            sock: zmq.Socket[bytes] = zctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(endpoint)
            bound.append(sock)

        helper = threading.Thread(target=bind_once_the_publish_waits)
        helper.start()
        try:
            r = pub.publish("t", "s", 1, {"n": 1})  # returns once the late broker took it
            helper.join(5)
            assert (r.seq, r.attempts, r.done()) == (1, 1, False)
            sock = bound[0]
            assert sock.poll(5000)
            ident, _header, _topic, env = sock.recv_multipart()
            assert msgpack.unpackb(env)["id"] == r.id
            sock.send_multipart([ident, msgpack.packb({"acc": [[1, 1]], "rej": []})])
            assert pub.flush(5) == [] and r.accepted
        finally:
            helper.join(5)
            for sock in bound:
                sock.close(linger=0)


def test_the_clients_long_running_loops_document_their_error_handling() -> None:
    """The drivers' loops (and the subscribers' receive loops) say, under "Error handling:",
    what they retry and what they let crash."""
    from busd_client.aio import AsyncSubscriber
    from busd_client.aio_driver import AsyncDriver
    from busd_client.subscriber import Subscriber
    from busd_client.sync_driver import SyncDriver

    loops = [SyncDriver._wait_for, AsyncDriver._run_pump, Subscriber.recv, AsyncSubscriber.recv]
    missing = [f.__qualname__ for f in loops if "Error handling:" not in (f.__doc__ or "")]
    assert not missing, f"no 'Error handling:' paragraph: {missing}"
