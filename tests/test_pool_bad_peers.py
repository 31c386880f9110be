"""The pool clients facing peers that break the protocol: garbage replies, silence, slowness,
undecodable messages, duplicates.

First PoolStrategy alone, fed malformed reply frames with passed-in times; then the real
PoolPublisher and PoolSubscriber on loopback against fake brokers: real ZeroMQ ROUTER and
XPUB sockets bound by the test, one behaving (answering per docs/protocol.md §2), one not.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import zmq
from conftest import TrackedContext, free_port, wait_for

from busd_client.core import dispatch, submit
from busd_client.errors import Rejected
from busd_client.ledger import Ledger, Link, Pending
from busd_client.pool import PoolPublisher, PoolReceipt, PoolSubscriber
from busd_client.pool_strategy import PoolStrategy
from busd_protocol.messages import encode_envelope

pytestmark = pytest.mark.timeout(15)


def _pack(obj: Any) -> bytes:
    frame: bytes = msgpack.packb(obj)
    return frame


# -- PoolStrategy fed malformed replies -----------------------------------------------------------

EPS = ("tcp://127.0.0.1:17001", "tcp://127.0.0.1:17002")


class Wire:
    """The driver's send, for PoolStrategy alone: records (link index, seq, id)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []

    def __call__(self, link: Link, p: Pending) -> bool:
        self.sent.append((link.index, link.next_seq, p.id))
        return True

    def to(self, index: int) -> list[str]:
        return [i for k, _, i in self.sent if k == index]


def make_core(n: int) -> PoolStrategy:
    core = PoolStrategy(Ledger(), list(EPS[:n]), 1.0)
    for link in core.links:
        core.on_connected(link)
    return core


def msg(id: str, *, retry_until: float = 0.0) -> Pending:
    p = Pending("t", b"t", b"envelope", id, retry_until, False)
    p._deadline = math.inf
    return p


def acc(*seqs: int) -> bytes:
    return _pack({"acc": [[s, s] for s in seqs]})


COUNTED = {
    "not msgpack": b"\xc1",
    "empty frame": b"",
    "truncated map": _pack({"acc": [[1, 1]]})[:-1],
    "trailing bytes": _pack({"acc": []}) + b"\x00",
    "int map key": _pack({1: 2}),
    "an array": _pack([[1, 1]]),
    "an int": _pack(7),
    "nil": _pack(None),
    "acc pair of one": _pack({"acc": [[1]]}),
    "acc pair of three": _pack({"acc": [[1, 1, 1]]}),
    "acc pair of strings": _pack({"acc": [["1", "1"]]}),
    "acc pair of floats": _pack({"acc": [[1.0, 1.0]]}),
    "acc pair of bools": _pack({"acc": [[True, True]]}),
    "acc pair a map": _pack({"acc": [{"lo": 1, "hi": 1}]}),
    "acc item an int": _pack({"acc": [1]}),
    "acc item nil": _pack({"acc": [None]}),
    "rej item an int": _pack({"rej": [1]}),
    "rej item a string": _pack({"rej": ["invalid"]}),
}


@pytest.mark.parametrize("frame", list(COUNTED.values()), ids=list(COUNTED))
def test_a_malformed_reply_is_counted_in_bad_replies_and_changes_nothing(frame: bytes) -> None:
    core, wire = make_core(1), Wire()
    p = msg("a")
    submit(core, p, 0.0, wire)
    core.on_reply(core.links[0], frame, 0.1)
    assert core.ledger.bad_replies == 1
    assert not p.done() and core.links[0].outstanding == {1: p}
    core.on_reply(core.links[0], acc(1), 0.2)  # a good reply still works after it
    assert p.accepted and core.ledger.bad_replies == 1


IGNORED = {
    "empty map": _pack({}),
    "unknown key": _pack({"hello": "world"}),
    "draining not true": _pack({"draining": "yes"}),
    "acc for a seq never sent": _pack({"acc": [[2, 2]]}),
    "acc range all below 1": _pack({"acc": [[-5, 0]]}),
    "rej with nil seq": _pack({"rej": [{"seq": None, "code": "bad_frame", "reason": "r"}]}),
    "rej for a seq never sent": _pack({"rej": [{"seq": 9, "code": "invalid", "reason": "r"}]}),
    "rej with a bool seq": _pack({"rej": [{"seq": True, "code": "invalid", "reason": "r"}]}),
}


@pytest.mark.parametrize("frame", list(IGNORED.values()), ids=list(IGNORED))
def test_a_reply_naming_no_sent_message_changes_no_message(frame: bytes) -> None:
    core, wire = make_core(1), Wire()
    p = msg("a")
    submit(core, p, 0.0, wire)
    core.on_reply(core.links[0], frame, 0.1)
    assert not p.done() and core.links[0].outstanding == {1: p} and core.ledger.count == 1


def test_a_bad_acc_pair_does_not_stop_the_good_ones_in_the_same_reply() -> None:
    core, wire = make_core(1), Wire()
    a, b = msg("a"), msg("b")
    submit(core, a, 0.0, wire)
    submit(core, b, 0.0, wire)
    core.on_reply(
        core.links[0],
        _pack({"acc": [[1], [1, 1], "x"], "rej": [5, {"seq": 2, "code": "invalid"}]}),
        0.1,
    )
    assert a.accepted
    assert isinstance(b.error, Rejected) and b.error.code == "invalid"
    assert core.ledger.bad_replies == 3


def test_a_rejection_with_odd_field_types_still_settles_as_a_rejection() -> None:
    core, wire = make_core(1), Wire()
    p = msg("a", retry_until=10.0)
    submit(core, p, 0.0, wire)
    core.on_reply(
        core.links[0],
        _pack({"rej": [{"seq": 1, "code": "rate_limited", "key": 5, "retry_after_ms": -3}]}),
        0.0,
    )
    # A negative wait reads as 0: retried at once, within the retry deadline.
    assert not p.done()
    core.expire(0.0)
    assert dispatch(core, 0.0, wire) == 1


# Protocol violations that PoolStrategy lets pass without counting them. common.md: bad input is
# always counted. Each is a reply that names messages this link never sent or has the wrong
# type where docs/protocol.md §2 fixes one.
UNCOUNTED = {
    "acc range past the last seq sent": _pack({"acc": [[1, 5]]}),
    "acc range covering only unsent seqs": _pack({"acc": [[100, 200]]}),
    "acc range of extreme ints": _pack({"acc": [[-(2**63), 2**64 - 1]]}),
    "acc range with lo above hi": _pack({"acc": [[1, 0]]}),
    "acc not an array": _pack({"acc": "1-1"}),
    "rej not an array": _pack({"rej": {"seq": 1, "code": "invalid"}}),
    "rej seq a string": _pack({"rej": [{"seq": "1", "code": "invalid", "reason": "r"}]}),
    "rej code not a string": _pack({"rej": [{"seq": 1, "code": 42, "reason": "r"}]}),
    "rej for a seq never sent": _pack({"rej": [{"seq": 9, "code": "invalid", "reason": "r"}]}),
}


@pytest.mark.parametrize("frame", list(UNCOUNTED.values()), ids=list(UNCOUNTED))
def test_a_reply_violating_the_protocol_is_counted_in_bad_replies(frame: bytes) -> None:
    core, wire = make_core(1), Wire()
    submit(core, msg("a"), 0.0, wire)
    core.on_reply(core.links[0], frame, 0.1)
    assert core.ledger.bad_replies == 1


def test_a_reply_of_extreme_ranges_and_many_items_never_raises_and_ends_quickly() -> None:
    core, wire = make_core(1), Wire()
    for k in range(50):
        submit(core, msg(f"m{k}"), 0.0, wire)
    frame = _pack(
        {
            "acc": [[2**64 - 1, -(2**63)]] * 2000 + [[0, 2**64 - 1]],
            "rej": [{"seq": 2**64 - 1, "code": "x" * 1000}] * 2000,
        }
    )
    started = time.perf_counter()
    core.on_reply(core.links[0], frame, 0.1)
    assert time.perf_counter() - started < 0.5
    assert core.ledger.count >= 0


@pytest.mark.serial
@pytest.mark.timeout(20)
def test_a_reply_repeating_a_wide_acc_range_costs_time_in_its_size_only() -> None:
    core, wire = make_core(1), Wire()
    for k in range(2000):
        submit(core, msg(f"m{k}"), 0.0, wire)
    frame = _pack({"acc": [[1, 2000]] * 2000})  # 14 kB
    started = time.perf_counter()
    core.on_reply(core.links[0], frame, 0.1)
    took = time.perf_counter() - started
    assert core.ledger.count == 0
    assert took < 0.15, f"{took:.2f} s for one 14 kB reply"


@pytest.mark.parametrize(
    "frame",
    [_pack({}), _pack({"acc": [[100, 200]]}), _pack({"rej": [{"seq": 99, "code": "invalid"}]})],
    ids=["empty map", "acc of unsent seqs", "rej of an unsent seq"],
)
def test_a_reply_that_answers_no_message_leaves_a_silent_link_avoided(frame: bytes) -> None:
    core, wire = make_core(2), Wire()
    submit(core, msg("a"), 0.0, wire)  # to link 0, never answered
    core.expire(1.0)
    l0 = core.links[0]
    assert l0.state(1.0) == "avoided (no answer in time)"
    core.on_reply(l0, frame, 1.1)
    assert (l0.state(1.1), l0.strikes, l0.probing) == ("avoided (no answer in time)", 1, True)


# -- a real PoolPublisher against fake brokers -------------------------------------------------

Answer = Callable[[int], list[list[bytes]]]  # seq -> reply messages (each a list of frames)


class FakeBroker:
    """A ROUTER bound on loopback, served by a thread: each message read is recorded and
    answered with ``answer(seq)``, ``delay`` seconds later (no messages: silence)."""

    def __init__(self, ctx: TrackedContext, answer: Answer, delay: float = 0.0) -> None:
        self.answer, self.delay = answer, delay
        self.sock = ctx.socket(zmq.ROUTER)
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.sock.bind(self.endpoint)
        self.received: list[tuple[int, str]] = []  # (seq, message id), in arrival order
        self.replied = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        later: list[tuple[float, list[bytes]]] = []
        while not self._stop.is_set():
            if self.sock.poll(5, zmq.POLLIN):
                while True:
                    try:
                        ident, header, _topic, envelope = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    seq = struct.unpack(">2sQ", header)[1]
                    self.received.append((seq, msgpack.unpackb(envelope)["id"]))
                    due = time.monotonic() + self.delay
                    later += [(due, [ident, *frames]) for frames in self.answer(seq)]
            now = time.monotonic()
            for item in [x for x in later if x[0] <= now]:
                later.remove(item)
                self.sock.send_multipart(item[1])
                self.replied += 1

    def ids(self) -> list[str]:
        return [i for _, i in self.received]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(linger=0)


def accept(seq: int) -> list[list[bytes]]:
    return [[_pack({"acc": [[seq, seq]]})]]


@pytest.fixture
def fake_broker(zctx: TrackedContext) -> Iterator[Callable[..., FakeBroker]]:
    made: list[FakeBroker] = []

    def make(answer: Answer, delay: float = 0.0) -> FakeBroker:
        made.append(FakeBroker(zctx, answer, delay))
        return made[-1]

    yield make
    for b in made:
        b.close()


def connected_publisher(ctx: TrackedContext, endpoints: list[str], **kw: Any) -> PoolPublisher:
    pub = PoolPublisher(endpoints, context=ctx, reconnect_ivl=0.05, **kw)
    wait_for(
        lambda: all(b["state"] == "up" for b in pub.brokers),
        timeout=5,
        what="every broker connected",
    )
    return pub


def publish(pub: PoolPublisher, n: int) -> list[PoolReceipt]:
    return [pub.publish("orders.created", "order", 1, {"n": k}) for k in range(n)]


SILENT_ISH: dict[str, tuple[Answer, int]] = {  # answer, bad_replies counted per answer
    "silence": (lambda seq: [], 0),
    "not msgpack": (lambda seq: [[b"\xc1garbage"]], 1),
    "a msgpack array": (lambda seq: [[_pack([seq, seq])]], 1),
    "acc pairs of the wrong shape": (lambda seq: [[_pack({"acc": [[seq], [str(seq)] * 2]})]], 2),
    "two-frame replies": (lambda seq: [[b"\xc1", _pack([seq])]], 2),
    "acc covering only unsent seqs": (
        lambda seq: [[_pack({"acc": [[seq + 100_000, seq + 200_000]]})]],
        1,
    ),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("behaviour", list(SILENT_ISH), ids=list(SILENT_ISH))
def test_every_message_is_accepted_via_the_good_broker_when_the_other_never_answers_properly(
    zctx: TrackedContext, fake_broker: Callable[..., FakeBroker], behaviour: str
) -> None:
    answer, per_answer = SILENT_ISH[behaviour]
    bad, good = fake_broker(answer), fake_broker(accept)
    n = 30
    with connected_publisher(
        zctx, [bad.endpoint, good.endpoint], timeout=5.0, attempt_timeout=0.3
    ) as pub:
        receipts = publish(pub, n)
        assert pub.flush(timeout=5.0) == []
        assert all(r.accepted and r.broker == good.endpoint for r in receipts)
        assert sorted(good.ids()) == sorted(r.id for r in receipts)  # each once
        assert bad.received, "the bad broker got its share before it was found out"
        stats = pub.statistics()
        assert stats["resent"] == len(bad.received)  # every send to it was sent again
        wait_for(
            lambda: pub.bad_replies == bad.replied * per_answer and bool(pub.brokers),
            timeout=2,
            what="every bad reply counted",
        )
        bad_state, good_state = pub.brokers
        assert bad_state["endpoint"] == bad.endpoint
        assert bad_state["state"] in {"avoided (no answer in time)", "probing", "up"}
        assert bad_state["accepted"] == 0 and bad_state["in_flight"] == 0
        assert bad_state["attempt_timeouts"] >= 1
        assert bad_state["moved_away"] == len(bad.received)
        assert good_state["state"] == "up" and good_state["accepted"] == n


@pytest.mark.timeout(10)
def test_a_silent_broker_is_reported_avoided_then_probing(
    zctx: TrackedContext, fake_broker: Callable[..., FakeBroker]
) -> None:
    silent, good = fake_broker(lambda seq: []), fake_broker(accept)
    with connected_publisher(
        zctx, [silent.endpoint, good.endpoint], timeout=5.0, attempt_timeout=0.3
    ) as pub:
        publish(pub, 4)
        assert pub.flush(timeout=5.0) == []
        states: set[str] = set()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and states != {"avoided (no answer in time)", "probing"}:
            states.add(pub.brokers[0]["state"])
            pub.flush(timeout=0.02)
        assert states == {"avoided (no answer in time)", "probing"}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("code", "expected"),
    [("no_such_code", "no_such_code"), (42, "internal")],
    ids=["unknown code", "code not a string"],
)
def test_a_broker_rejecting_with_a_bogus_code_fails_only_what_it_was_sent(
    zctx: TrackedContext, fake_broker: Callable[..., FakeBroker], code: object, expected: str
) -> None:
    """docs/protocol.md §2.1: an unknown code is a final rejection; nothing crashes."""
    bad = fake_broker(lambda seq: [[_pack({"rej": [{"seq": seq, "code": code}]})]])
    good = fake_broker(accept)
    with connected_publisher(
        zctx, [bad.endpoint, good.endpoint], timeout=5.0, attempt_timeout=0.3
    ) as pub:
        receipts = publish(pub, 20)
        failures = pub.flush(timeout=5.0)
        refused = set(bad.ids())
        assert refused and len(refused) == len(bad.received)  # none was sent there twice
        assert {e.id for e in failures} == refused
        assert all(isinstance(e, Rejected) and e.code == expected for e in failures)
        assert all(
            r.accepted and r.broker == good.endpoint for r in receipts if r.id not in refused
        )
        assert pub.brokers[0]["rejected"] == len(refused)
        assert pub.brokers[0]["state"] == "up"  # it answers: it is not avoided


@pytest.mark.timeout(10)
def test_acc_covering_unsent_seqs_is_counted_in_bad_replies(
    zctx: TrackedContext, fake_broker: Callable[..., FakeBroker]
) -> None:
    bad = fake_broker(lambda seq: [[_pack({"acc": [[seq + 100_000, seq + 200_000]]})]])
    good = fake_broker(accept)
    with connected_publisher(
        zctx, [bad.endpoint, good.endpoint], timeout=5.0, attempt_timeout=0.3
    ) as pub:
        publish(pub, 10)
        assert pub.flush(timeout=5.0) == []
        wait_for(
            lambda: pub.bad_replies == bad.replied > 0, timeout=0.5, what="every bad reply counted"
        )


@pytest.mark.timeout(10)
def test_answers_after_the_attempt_timeout_are_late_and_the_good_broker_takes_the_messages(
    zctx: TrackedContext, fake_broker: Callable[..., FakeBroker]
) -> None:
    slow, good = fake_broker(accept, delay=0.8), fake_broker(accept)
    with connected_publisher(
        zctx, [slow.endpoint, good.endpoint], timeout=5.0, attempt_timeout=0.3
    ) as pub:
        receipts = publish(pub, 20)
        assert pub.flush(timeout=5.0) == []
        assert all(r.accepted and r.broker == good.endpoint for r in receipts)
        assert slow.received
        wait_for(
            lambda: pub.brokers[0]["late_answers"] == len(slow.received),
            timeout=3,
            what="the slow broker's answers, late",
        )
        assert pub.bad_replies == 0 and pub.statistics()["late_accepts"] == 0
        assert pub.pending == 0


@pytest.mark.timeout(10)
def test_a_late_accept_settles_a_message_no_other_broker_took(
    zctx: TrackedContext, fake_broker: Callable[..., FakeBroker]
) -> None:
    slow, silent = fake_broker(accept, delay=0.5), fake_broker(lambda seq: [])
    with connected_publisher(
        zctx, [slow.endpoint, silent.endpoint], timeout=6.0, attempt_timeout=0.3
    ) as pub:
        receipts = publish(pub, 4)
        assert pub.flush(timeout=6.0) == []
        assert all(r.accepted and r.broker == slow.endpoint for r in receipts)
        assert pub.statistics()["late_accepts"] >= 1
        assert pub.brokers[1]["accepted"] == 0


# -- a real PoolSubscriber against fake publishers ---------------------------------------------


def envelope(id: str, topic: str = "orders.created") -> bytes:
    return encode_envelope(topic, "order", 1, {"n": 1}, id=id, publisher="fake")


@pytest.fixture
def fake_pubs(zctx: TrackedContext) -> Iterator[list[zmq.Socket[bytes]]]:
    """Two XPUB sockets bound on loopback: brokers' egress as a subscriber sees it."""
    socks = [zctx.socket(zmq.XPUB) for _ in range(2)]
    for s in socks:
        s.bind(f"tcp://127.0.0.1:{free_port()}")
    yield socks
    for s in socks:
        s.close(linger=0)


def endpoint_of(sock: zmq.Socket[bytes]) -> str:
    ep: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return ep


def subscribed(pubs: list[zmq.Socket[bytes]]) -> None:
    """Wait until every fake publisher has our subscription (XPUB hands it over)."""
    for s in pubs:
        assert s.poll(5000, zmq.POLLIN), "no subscription reached the fake publisher"
        assert s.recv().startswith(b"\x01")


def drain(
    sub: PoolSubscriber, until: Callable[[list[str]], bool], timeout: float = 5.0
) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, f"gave up with {got}"
        m = sub.recv(timeout=0.05)
        if m is not None:
            got.append(m.id)
    return got


UNDECODABLE = [
    [b"orders.created", b"\xc1"],
    [b"orders.created"],
    [b"orders.created", envelope("x1"), b"extra"],
    [b"orders.created", _pack([1, 2])],
    [b"orders.other", envelope("x2")],
    [b"\xff\xfe", envelope("x3")],
    [b"orders.created", _pack({"topic": "orders.created", "id": 7})],
    [b"orders.created", envelope("x4") + b"\x00"],
]


@pytest.mark.timeout(10)
def test_the_subscriber_counts_undecodable_messages_and_keeps_delivering(
    zctx: TrackedContext, fake_pubs: list[zmq.Socket[bytes]]
) -> None:
    bad, good = fake_pubs
    sub = PoolSubscriber([endpoint_of(bad), endpoint_of(good)], "", context=zctx)
    try:
        subscribed([bad, good])
        for frames in UNDECODABLE:
            bad.send_multipart(frames)
        bad.send(b"orders.created", zmq.SNDMORE)
        bad.send(envelope("after-garbage"))
        good.send_multipart([b"orders.created", envelope("from-good")])
        got = drain(sub, lambda got: len(got) >= 2)
        assert sorted(got) == ["after-garbage", "from-good"]
        assert sub.bad_messages == len(UNDECODABLE)
        assert sub.duplicates == 0
    finally:
        sub.close()


@pytest.mark.timeout(10)
def test_copies_with_the_same_id_from_two_brokers_are_delivered_once(
    zctx: TrackedContext, fake_pubs: list[zmq.Socket[bytes]]
) -> None:
    a, b = fake_pubs
    sub = PoolSubscriber([endpoint_of(a), endpoint_of(b)], "orders.", context=zctx)
    try:
        subscribed([a, b])
        ids = [f"m{k}" for k in range(50)]
        for i in ids:
            a.send_multipart([b"orders.created", envelope(i)])
            b.send_multipart([b"orders.created", envelope(i)])
        got = drain(sub, lambda got: len(got) >= 50 and sub.duplicates >= 50)
        assert sorted(got) == sorted(ids)
        assert sub.duplicates == 50
        assert sub.recv(timeout=0.1) is None
    finally:
        sub.close()
