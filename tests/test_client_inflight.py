"""The in-flight bookkeeping: every message settles exactly once, whatever the replies."""

from __future__ import annotations

import random

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from busd_client import PublishTimeout, RateLimited, Rejected
from busd_client.inflight import InFlight, Pending


def pending(i: int, retry_until: float = 0.0) -> Pending:
    return Pending("t", b"t", b"env", f"id{i}", retry_until, False)


def ranges(seqs: list[int]) -> list[list[int]]:
    """Contiguous runs as [lo, hi] pairs, the way busd compresses them."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


@given(st.lists(st.booleans(), min_size=1, max_size=200), st.randoms(use_true_random=False))
def test_every_message_settles_once_under_any_batching(
    accept: list[bool], rnd: random.Random
) -> None:
    inflight = InFlight(timeout=5.0)
    messages = [pending(i) for i in range(len(accept))]
    for p in messages:
        inflight.sent(p, now=0.0)
    assert inflight.count == len(messages)
    order = list(range(1, len(messages) + 1))
    cuts = sorted(rnd.sample(range(1, len(order)), k=min(len(order) - 1, rnd.randint(0, 5))))
    for lo, hi in zip([0, *cuts], [*cuts, len(order)], strict=True):
        batch = order[lo:hi]
        acc = [s for s in batch if accept[s - 1]]
        rej = [{"seq": s, "code": "invalid", "reason": "r"} for s in batch if not accept[s - 1]]
        inflight.on_reply(msgpack.packb({"acc": ranges(acc), "rej": rej}), now=1.0)
    # Replayed replies change nothing: each message settles once.
    inflight.on_reply(msgpack.packb({"acc": [[1, len(order)]], "rej": []}), now=1.0)
    assert inflight.count == 0
    assert [p.accepted for p in messages] == accept
    failures = inflight.take_failures()
    assert [e.id for e in failures] == [
        p.id for p, ok in zip(messages, accept, strict=True) if not ok
    ]
    assert all(isinstance(e, Rejected) and e.code == "invalid" for e in failures)


def test_unanswered_messages_time_out_in_send_order() -> None:
    inflight = InFlight(timeout=1.0)
    a, b = pending(1), pending(2)
    inflight.sent(a, now=0.0)
    inflight.sent(b, now=0.5)
    assert inflight.next_wakeup() == 1.0
    inflight.expire(1.0)
    assert isinstance(a.error, PublishTimeout) and not b.done()
    assert inflight.next_wakeup() == 1.5
    inflight.expire(1.5)
    assert isinstance(b.error, PublishTimeout) and inflight.count == 0


def test_rate_limited_message_is_handed_back_for_resending_when_due() -> None:
    inflight = InFlight(timeout=1.0)
    p = pending(1, retry_until=10.0)
    inflight.sent(p, now=0.0)
    inflight.on_reply(
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
    assert not p.done() and inflight.count == 1
    assert inflight.next_wakeup() == 0.4
    inflight.expire(5.0)  # the first attempt's deadline no longer applies
    assert not p.done()
    assert inflight.due_retries(0.39) == []
    assert inflight.due_retries(0.4) == [p]
    inflight.sent(p, now=0.4)
    assert (p.seq, p.attempts) == (2, 2)
    inflight.on_reply(msgpack.packb({"acc": [[2, 2]], "rej": []}), now=0.5)
    assert p.accepted and p.error is None and inflight.count == 0


def test_retry_that_cannot_be_sent_before_the_deadline_fails_with_the_refusal() -> None:
    inflight = InFlight(timeout=1.0)
    p = pending(1, retry_until=0.5)
    inflight.sent(p, now=0.0)
    inflight.on_reply(
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
    [due] = inflight.due_retries(0.4)
    inflight.retry_later(due, now=0.4, delay=0.2)  # socket full: 0.6 is past the deadline
    assert isinstance(p.error, RateLimited) and inflight.count == 0
