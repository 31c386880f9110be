"""The single-broker strategy's bookkeeping: every message settles exactly once, whatever
the replies. Driven step by step with passed-in times, as the drivers drive it."""

from __future__ import annotations

import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from busd_client import PublishTimeout, RateLimited, Rejected
from busd_client.ledger import Ledger, Pending
from busd_client.single_broker import SingleBroker


def pending(i: int, retry_until: float = 0.0) -> Pending:
    return Pending("t", b"t", b"env", f"id{i}", retry_until, False)


def single(timeout: float) -> SingleBroker:
    return SingleBroker(Ledger(), "tcp://127.0.0.1:17001", timeout)


def send(s: SingleBroker, p: Pending, now: float) -> None:
    """What a driver does at publish when the socket takes the message."""
    assert s.add(p, now) is s.link
    s.sent(s.link, p, now)


def ranges(seqs: list[int]) -> list[list[int]]:
    """Contiguous runs as [lo, hi] pairs, the way busd compresses them."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


@settings(deadline=None)  # a time limit per example is a timing assertion: the load decides it
@given(st.lists(st.booleans(), min_size=1, max_size=200), st.randoms(use_true_random=False))
def test_every_message_settles_once_under_any_batching(
    accept: list[bool], rnd: random.Random
) -> None:
    inflight = single(timeout=5.0)
    messages = [pending(i) for i in range(len(accept))]
    for p in messages:
        send(inflight, p, now=0.0)
    assert inflight.ledger.count == len(messages)
    order = list(range(1, len(messages) + 1))
    cuts = sorted(rnd.sample(range(1, len(order)), k=min(len(order) - 1, rnd.randint(0, 5))))
    for lo, hi in zip([0, *cuts], [*cuts, len(order)], strict=True):
        batch = order[lo:hi]
        acc = [s for s in batch if accept[s - 1]]
        rej = [{"seq": s, "code": "invalid", "reason": "r"} for s in batch if not accept[s - 1]]
        inflight.on_reply(inflight.link, msgpack.packb({"acc": ranges(acc), "rej": rej}), now=1.0)
    # Replayed replies change nothing: each message settles once.
    inflight.on_reply(inflight.link, msgpack.packb({"acc": [[1, len(order)]], "rej": []}), now=1.0)
    assert inflight.ledger.count == 0
    assert [p.accepted for p in messages] == accept
    failures = inflight.ledger.take_failures()
    assert [e.id for e in failures] == [
        p.id for p, ok in zip(messages, accept, strict=True) if not ok
    ]
    assert all(isinstance(e, Rejected) and e.code == "invalid" for e in failures)


def test_unanswered_messages_time_out_in_send_order() -> None:
    inflight = single(timeout=1.0)
    a, b = pending(1), pending(2)
    send(inflight, a, now=0.0)
    send(inflight, b, now=0.5)
    assert inflight.next_wakeup(0.5) == 1.0
    inflight.expire(1.0)
    assert isinstance(a.error, PublishTimeout) and not b.done()
    assert inflight.next_wakeup(1.0) == 1.5
    inflight.expire(1.5)
    assert isinstance(b.error, PublishTimeout) and inflight.ledger.count == 0


def test_rate_limited_message_is_handed_back_for_resending_when_due() -> None:
    inflight = single(timeout=1.0)
    p = pending(1, retry_until=10.0)
    send(inflight, p, now=0.0)
    inflight.on_reply(
        inflight.link,
        msgpack.packb(
            {
                "acc": [],
                "rej": [
                    {
                        "seq": 1,
                        "code": "rate_limited",
                        "reason": "r",
                        "key": "k",
                        "retry_after_ms": 300,
                    }
                ],
            }
        ),
        now=0.1,
    )
    assert not p.done() and inflight.ledger.count == 1
    assert inflight.next_wakeup(0.1) == 0.4
    inflight.expire(0.39)
    assert inflight.next_send(0.39) is None
    inflight.expire(0.4)
    assert inflight.next_send(0.4) == (inflight.link, p)
    inflight.expire(5.0)  # the first attempt's deadline no longer applies
    assert not p.done()
    inflight.sent(inflight.link, p, now=5.0)
    assert (p.seq, p.attempts) == (2, 2)
    inflight.on_reply(inflight.link, msgpack.packb({"acc": [[2, 2]], "rej": []}), now=5.1)
    assert p.accepted and p.error is None and inflight.ledger.count == 0


def test_retry_that_cannot_be_sent_before_the_deadline_fails_with_the_refusal() -> None:
    inflight = single(timeout=1.0)
    p = pending(1, retry_until=0.5)
    send(inflight, p, now=0.0)
    inflight.on_reply(
        inflight.link,
        msgpack.packb(
            {
                "acc": [],
                "rej": [
                    {
                        "seq": 1,
                        "code": "rate_limited",
                        "reason": "r",
                        "key": "k",
                        "retry_after_ms": 400,
                    }
                ],
            }
        ),
        now=0.0,
    )
    inflight.expire(0.4)
    link, due = inflight.next_send(0.4) or (None, None)
    assert link is inflight.link and due is p
    inflight.blocked(link, due, now=0.4)  # socket full until past the retry deadline
    inflight.expire(0.4)
    assert not p.done()
    inflight.expire(0.5)
    assert isinstance(p.error, RateLimited) and inflight.ledger.count == 0


def test_a_message_the_socket_would_not_take_waits_and_goes_first_once_writable() -> None:
    s = single(timeout=1.0)
    a, b = pending(1), pending(2)
    a._deadline = b._deadline = 1.0
    assert s.add(a, 0.0) is s.link
    s.blocked(s.link, a, 0.0)  # no connection (IMMEDIATE=1): the socket would not take it
    assert s.add(b, 0.1) is None  # behind the waiting one: order is kept
    assert list(s.waiting) == [a, b] and s.ledger.count == 2
    assert s.next_send(0.2) is None  # until the driver finds the socket writable
    s.on_connected(s.link)
    assert s.next_send(0.3) == (s.link, a)
    s.sent(s.link, a, 0.3)
    assert s.next_send(0.3) == (s.link, b)
    s.sent(s.link, b, 0.3)
    assert (a.seq, b.seq) == (1, 2) and not s.waiting


def test_a_message_never_sent_fails_at_its_deadline_with_sent_false() -> None:
    s = single(timeout=1.0)
    p = pending(1)
    p._deadline = 1.0
    s.add(p, 0.0)
    s.blocked(s.link, p, 0.0)
    assert s.next_wakeup(0.0) == 1.0
    s.expire(0.99)
    assert not p.done()
    s.expire(1.0)
    assert isinstance(p.error, PublishTimeout) and p.error.sent is False
    assert "not sent within 1 s" in str(p.error)
    assert s.ledger.count == 0 and not s.waiting
