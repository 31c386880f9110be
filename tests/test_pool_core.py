"""PoolStrategy: the pool publisher's decision rules, driven step by step with passed-in
times.

No sockets: PoolStrategy does no I/O by design; ``core.submit`` and ``core.dispatch`` feed
what it names to a driver's ``send``. ``Wire`` below takes the driver's place: it records
what would go on the wire and can play a full socket. Replies are the msgpack maps of
docs/protocol.md §2.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busd_client.core import dispatch, submit
from busd_client.errors import (
    ClosedError,
    Disabled,
    PublishTimeout,
    RateLimited,
    Rejected,
)
from busd_client.ledger import Ledger, Link, Pending
from busd_client.pool_strategy import PoolStrategy

pytestmark = pytest.mark.timeout(30)

EPS = ("tcp://127.0.0.1:17001", "tcp://127.0.0.1:17002", "tcp://127.0.0.1:17003")


class Wire:
    """The driver's send: records (link index, seq, id); links in ``full`` refuse (EAGAIN)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []
        self.full: set[int] = set()

    def __call__(self, link: Link, p: Pending) -> bool:
        if link.index in self.full:
            return False
        self.sent.append((link.index, link.next_seq, p.id))
        return True

    def to(self, index: int) -> list[str]:
        return [i for k, _, i in self.sent if k == index]


def make_core(
    n: int = 2,
    connected: tuple[int, ...] | None = None,
    *,
    attempt_timeout: float = 1.0,
    avoid_base: float = 0.25,
    avoid_max: float = 8.0,
) -> PoolStrategy:
    core = PoolStrategy(
        Ledger(), list(EPS[:n]), attempt_timeout, avoid_base=avoid_base, avoid_max=avoid_max
    )
    for k in range(n) if connected is None else connected:
        core.on_connected(core.links[k])
    return core


def msg(
    id: str, *, deadline: float = math.inf, retry_until: float = 0.0, wait_disabled: bool = False
) -> Pending:
    p = Pending("orders.created", b"orders.created", b"envelope", id, retry_until, wait_disabled)
    p._deadline = deadline
    return p


def _pack(obj: Any) -> bytes:
    frame: bytes = msgpack.packb(obj)
    return frame


def acc(*seqs: int) -> bytes:
    frame: bytes = msgpack.packb({"acc": [[s, s] for s in seqs]})
    return frame


def rej(seq: int, code: str, **extra: Any) -> bytes:
    frame: bytes = msgpack.packb({"rej": [{"seq": seq, "code": code, "reason": "test", **extra}]})
    return frame


# -- choosing a broker -------------------------------------------------------------------------


def test_messages_go_round_robin_over_the_usable_links() -> None:
    core, wire = make_core(3), Wire()
    for k in range(7):
        submit(core, msg(f"m{k}"), 0.0, wire)
    assert [k for k, _, _ in wire.sent] == [0, 1, 2, 0, 1, 2, 0]
    assert [s for _, s, _ in wire.sent] == [1, 1, 1, 2, 2, 2, 3]


def test_a_link_not_connected_is_never_picked() -> None:
    core, wire = make_core(3, connected=(0, 2)), Wire()
    for k in range(6):
        submit(core, msg(f"m{k}"), 0.0, wire)
    assert wire.to(1) == []
    assert [k for k, _, _ in wire.sent] == [0, 2, 0, 2, 0, 2]
    assert core.links[1].state(0.0) == "down"


def test_with_no_link_connected_messages_wait_and_go_once_one_connects() -> None:
    core, wire = make_core(2, connected=()), Wire()
    ps = [msg(f"m{k}") for k in range(3)]
    for p in ps:
        submit(core, p, 0.0, wire)
    assert core.pick(0.0) is None
    assert wire.sent == [] and list(core.waiting) == ps and core.ledger.count == 3
    core.on_connected(core.links[1])
    assert dispatch(core, 0.5, wire) == 3
    assert wire.to(1) == ["m0", "m1", "m2"]
    assert not core.waiting


def test_dispatch_sends_with_next_seq_and_records_the_message_on_its_link() -> None:
    core, wire = make_core(1), Wire()
    a, b = msg("a"), msg("b")
    submit(core, a, 0.0, wire)
    submit(core, b, 0.0, wire)
    link = core.links[0]
    assert wire.sent == [(0, 1, "a"), (0, 2, "b")]
    assert link.next_seq == 3 and link.sent == 2
    assert link.outstanding == {1: a, 2: b}
    assert (a.seq, b.seq, a.attempts) == (1, 2, 1)
    assert core.ledger.count == 2 and not a.done()


def test_a_full_socket_avoids_that_link_briefly_and_the_message_goes_to_another() -> None:
    core, wire = make_core(2), Wire()
    wire.full.add(0)
    p = msg("a")
    submit(core, p, 0.0, wire)
    assert wire.sent == [(1, 1, "a")]
    assert core.links[0].state(0.0) == "avoided (socket full)"
    assert core.links[0].usable(1.0)  # only briefly


# -- answers -------------------------------------------------------------------------------------


def test_an_accept_settles_the_message_with_the_accepting_broker() -> None:
    core, wire = make_core(2), Wire()
    a, b = msg("a"), msg("b")
    submit(core, a, 0.0, wire)
    submit(core, b, 0.0, wire)
    core.on_reply(core.links[1], acc(1), 0.1)
    assert b.accepted and b.broker == EPS[1] and b.error is None
    assert not a.done()
    assert core.ledger.count == 1 and core.ledger.settled == 1
    assert core.links[1].accepted == 1 and not core.links[1].outstanding


def test_an_acc_range_settles_every_seq_in_it() -> None:
    core, wire = make_core(1), Wire()
    ps = [msg(f"m{k}") for k in range(5)]
    for p in ps:
        submit(core, p, 0.0, wire)
    core.on_reply(core.links[0], msgpack.packb({"acc": [[2, 4]]}), 0.1)
    assert [p.accepted for p in ps] == [False, True, True, True, False]


@pytest.mark.parametrize(
    "code",
    [
        "invalid",
        "unknown_schema",
        "bad_envelope",
        "too_large",
        "internal",
        "a_code_from_the_future",
    ],
)
def test_a_message_rejection_is_final_and_never_resent(code: str) -> None:
    core, wire = make_core(2), Wire()
    p = msg("a", deadline=30.0, retry_until=30.0)
    submit(core, p, 0.0, wire)
    core.on_reply(core.links[0], rej(1, code), 0.1)
    assert p.done() and not p.accepted
    assert isinstance(p.error, Rejected) and p.error.code == code
    assert (p.error.id, p.error.topic) == ("a", "orders.created")
    for t in (0.5, 2.0, 10.0, 40.0):
        core.expire(t)
        dispatch(core, t, wire)
    assert len(wire.sent) == 1
    assert core.ledger.count == 0 and core.links[0].rejected == 1
    assert core.ledger.take_failures() == [p.error]


def test_rate_limited_is_retried_after_retry_after_ms_within_the_retry_deadline() -> None:
    core, wire = make_core(1), Wire()
    p = msg("a", deadline=20.0, retry_until=10.0)
    submit(core, p, 0.0, wire)
    core.on_reply(core.links[0], rej(1, "rate_limited", key="publish", retry_after_ms=500), 0.1)
    assert not p.done() and not core.waiting
    assert core.next_wakeup(0.1) == pytest.approx(0.6)
    core.expire(0.59)
    assert dispatch(core, 0.59, wire) == 0
    core.expire(0.6)
    assert dispatch(core, 0.6, wire) == 1
    assert wire.sent[-1] == (0, 2, "a") and p.attempts == 2
    core.on_reply(core.links[0], acc(2), 0.7)
    assert p.accepted and core.ledger.count == 0


@pytest.mark.parametrize(
    ("retry_until", "deadline"),
    [
        (0.0, 30.0),  # no retry deadline: the first refusal is final
        (0.3, 30.0),  # the retry would come after the retry deadline
        (10.0, 0.5),  # the retry would come at or after the message's deadline
    ],
)
def test_rate_limited_is_final_when_its_retry_falls_outside_the_deadlines(
    retry_until: float, deadline: float
) -> None:
    core, wire = make_core(1), Wire()
    p = msg("a", deadline=deadline, retry_until=retry_until)
    submit(core, p, 0.0, wire)
    core.on_reply(core.links[0], rej(1, "rate_limited", key="publish", retry_after_ms=500), 0.0)
    assert isinstance(p.error, RateLimited)
    assert (p.error.key, p.error.retry_after_ms) == ("publish", 500)
    assert core.ledger.count == 0 and not core._retries


def test_disabled_is_retried_only_when_waiting_was_asked_for() -> None:
    core, wire = make_core(1), Wire()
    waits, gives_up = (
        msg("w", retry_until=10.0, wait_disabled=True),
        msg("g", retry_until=10.0, wait_disabled=False),
    )
    submit(core, waits, 0.0, wire)
    submit(core, gives_up, 0.0, wire)
    core.on_reply(
        core.links[0],
        msgpack.packb(
            {
                "rej": [
                    {"seq": 1, "code": "disabled", "reason": "r", "key": "publish"},
                    {"seq": 2, "code": "disabled", "reason": "r", "key": "publish"},
                ]
            }
        ),
        0.0,
    )
    assert isinstance(gives_up.error, Disabled) and not waits.done()
    core.expire(0.25)
    dispatch(core, 0.25, wire)
    assert wire.sent[-1] == (0, 3, "w")


def test_not_ready_avoids_the_link_for_retry_after_ms_and_moves_the_message_at_once() -> None:
    core, wire = make_core(2), Wire()
    p = msg("a", deadline=30.0)
    submit(core, p, 0.0, wire)
    l0 = core.links[0]
    core.on_reply(l0, rej(1, "not_ready", retry_after_ms=700), 0.1)
    assert not p.done() and list(core.waiting) == [p]
    assert dispatch(core, 0.1, wire) == 1
    assert wire.sent[-1] == (1, 1, "a")
    assert l0.state(0.1) == "avoided (not_ready)" and l0.rejected == 0 and l0.moved_away == 1
    assert not l0.usable(0.79) and l0.usable(0.8)
    core.on_reply(core.links[1], acc(1), 0.2)
    assert p.accepted and p.broker == EPS[1]


def test_shutting_down_avoids_the_link_and_moves_the_message() -> None:
    core, wire = make_core(2, avoid_max=4.0), Wire()
    p = msg("a", deadline=30.0)
    submit(core, p, 0.0, wire)
    core.on_reply(core.links[0], rej(1, "shutting_down"), 0.0)
    dispatch(core, 0.0, wire)
    assert wire.sent[-1] == (1, 1, "a") and not p.done()
    assert core.links[0].state(3.9) == "avoided (shutting_down)"
    assert core.links[0].usable(4.0)


def test_a_draining_reply_avoids_the_link_and_still_settles_what_it_accepts() -> None:
    core, wire = make_core(2, avoid_max=4.0), Wire()
    a, b, c = msg("a"), msg("b"), msg("c")
    for p in (a, b, c):
        submit(core, p, 0.0, wire)  # a -> 0, b -> 1, c -> 0
    core.on_reply(core.links[0], msgpack.packb({"acc": [[1, 1]], "draining": True}), 0.1)
    assert a.accepted and not c.done()
    assert core.links[0].state(0.1) == "avoided (draining)"
    d = msg("d")
    submit(core, d, 0.2, wire)
    assert wire.sent[-1] == (1, 2, "d")
    core.on_reply(core.links[0], acc(2), 0.3)  # it still answers what it read
    assert c.accepted and c.broker == EPS[0]


# -- no answer ----------------------------------------------------------------------------------


def test_an_attempt_timeout_moves_the_message_to_another_link_and_avoids_the_first() -> None:
    core, wire = make_core(2), Wire()
    p = msg("a", deadline=30.0)
    submit(core, p, 0.0, wire)
    core.expire(0.99)
    assert dispatch(core, 0.99, wire) == 0
    core.expire(1.0)
    assert dispatch(core, 1.0, wire) == 1
    assert wire.sent == [(0, 1, "a"), (1, 1, "a")]
    l0 = core.links[0]
    assert (p.attempts, core.resent, l0.timeouts, l0.moved_away) == (2, 1, 1, 1)
    assert l0.state(1.0) == "avoided (no answer in time)"
    assert l0.avoid_until == pytest.approx(1.25)
    assert not p.done()


def test_avoidance_doubles_with_each_timeout_up_to_avoid_max() -> None:
    core, wire = make_core(1, avoid_base=0.25, avoid_max=1.0), Wire()
    submit(core, msg("a"), 0.0, wire)
    link = core.links[0]
    untils = []
    t = 0.0
    for _ in range(5):
        t += 1.0  # the attempt timeout
        core.expire(t)
        untils.append(link.avoid_until)
        t = link.avoid_until
        assert dispatch(core, t - 0.001, wire) == 0
        assert dispatch(core, t, wire) == 1
    assert untils == pytest.approx([1.25, 2.75, 4.75, 6.75, 8.75])
    assert link.strikes == 5 and link.timeouts == 5


def test_after_avoidance_probing_allows_one_outstanding_message_until_an_answer() -> None:
    core, wire = make_core(1), Wire()
    for k in range(3):
        submit(core, msg(f"m{k}"), 0.0, wire)
    link = core.links[0]
    core.expire(1.0)
    assert len(core.waiting) == 3
    assert dispatch(core, 1.25, wire) == 1
    assert link.state(1.25) == "probing" and not link.usable(1.25)
    assert dispatch(core, 1.5, wire) == 0
    core.on_reply(link, acc(link.next_seq - 1), 1.6)
    assert link.state(1.6) == "up" and link.strikes == 0
    assert dispatch(core, 1.6, wire) == 2
    assert core.ledger.count == 2


def test_disconnect_moves_every_outstanding_message_in_seq_order_to_the_front() -> None:
    core, wire = make_core(2, connected=(0,)), Wire()
    a, b, c, d = (msg(k) for k in "abcd")
    for p in (a, b, c):
        submit(core, p, 0.0, wire)
    wire.full.add(0)
    submit(core, d, 0.0, wire)  # the socket is full: d waits
    assert list(core.waiting) == [d]
    l0 = core.links[0]
    core.on_disconnected(l0)
    assert list(core.waiting) == [a, b, c, d]
    assert not l0.outstanding and not l0.deadlines
    assert (l0.moved_away, l0.disconnects, l0.connected) == (3, 1, False)
    core.on_connected(core.links[1])
    dispatch(core, 0.1, wire)
    assert wire.sent[-4:] == [(1, 1, "a"), (1, 2, "b"), (1, 3, "c"), (1, 4, "d")]


def test_reconnecting_clears_avoidance_strikes_and_probing() -> None:
    core, wire = make_core(1), Wire()
    submit(core, msg("a"), 0.0, wire)
    link = core.links[0]
    core.expire(1.0)
    assert (link.usable(1.0), link.strikes, link.probing) == (False, 1, True)
    core.on_disconnected(link)
    core.on_connected(link)
    assert (link.usable(1.0), link.strikes, link.probing) == (True, 0, False)
    assert link.state(1.0) == "up"


def test_a_late_accept_settles_the_moved_message_and_a_second_accept_is_ignored() -> None:
    core, wire = make_core(2), Wire()
    p = msg("a", deadline=30.0)
    submit(core, p, 0.0, wire)
    core.expire(1.0)
    dispatch(core, 1.0, wire)  # now in flight on link 1 as its seq 1
    l0, l1 = core.links
    core.on_reply(l0, acc(1), 1.1)
    assert p.accepted and p.broker == EPS[0]
    assert core.late_accepts == 1 and l0.late_answers == 1
    assert not l1.outstanding  # its answer no longer matters
    core.on_reply(l1, acc(1), 1.2)
    assert p.broker == EPS[0] and core.late_accepts == 1 and core.ledger.settled == 1
    assert core.ledger.count == 0 and l1.late_answers == 1


@pytest.mark.parametrize(
    "late",
    [
        rej(1, "invalid"),
        rej(1, "not_ready", retry_after_ms=100),
        rej(1, "rate_limited", key="k", retry_after_ms=10),
    ],
    ids=["invalid", "not_ready", "rate_limited"],
)
def test_a_late_rejection_is_ignored(late: bytes) -> None:
    core, wire = make_core(2), Wire()
    p = msg("a", deadline=30.0, retry_until=30.0)
    submit(core, p, 0.0, wire)
    core.expire(1.0)
    dispatch(core, 1.0, wire)
    l0, l1 = core.links
    core.on_reply(l0, late, 1.1)
    assert not p.done() and l1.outstanding == {1: p} and l0.rejected == 0
    assert l0.avoid_reason != "not_ready"  # a late not_ready says nothing about now
    core.on_reply(l1, acc(1), 1.2)
    assert p.accepted and p.broker == EPS[1]


# -- the overall deadline, close, timers -------------------------------------------------------


def test_a_message_never_sent_fails_at_its_deadline_with_sent_false() -> None:
    core, wire = make_core(2, connected=()), Wire()
    p = msg("a", deadline=5.0)
    submit(core, p, 0.0, wire)
    core.expire(4.99)
    assert not p.done()
    core.expire(5.0)
    assert isinstance(p.error, PublishTimeout) and p.error.sent is False
    assert core.ledger.count == 0 and core.ledger.take_failures() == [p.error]


def test_a_message_sent_but_unaccepted_fails_at_its_deadline_with_sent_true() -> None:
    core, wire = make_core(1, attempt_timeout=10.0), Wire()
    p = msg("a", deadline=2.0)
    submit(core, p, 0.0, wire)
    core.expire(2.0)
    assert isinstance(p.error, PublishTimeout) and p.error.sent is True
    assert not core.links[0].outstanding
    core.on_reply(core.links[0], acc(1), 2.1)  # too late: the caller was told already
    assert isinstance(p.error, PublishTimeout) and core.ledger.settled == 1


def test_an_infinite_deadline_never_expires() -> None:
    core, wire = make_core(1, connected=()), Wire()
    p = msg("a")
    submit(core, p, 0.0, wire)
    core.expire(1e12)
    assert not p.done() and core.ledger.count == 1
    assert core.next_wakeup(1e12) is None


def test_close_fails_every_pending_message_with_closed_error() -> None:
    core, wire = make_core(1), Wire()
    done, inflight = msg("done"), msg("inflight")
    retrying = msg("retrying", retry_until=10.0, deadline=20.0)
    submit(core, done, 0.0, wire)
    core.on_reply(core.links[0], acc(1), 0.0)
    submit(core, inflight, 0.0, wire)
    submit(core, retrying, 0.0, wire)
    core.on_reply(core.links[0], rej(3, "rate_limited", key="k", retry_after_ms=1000), 0.0)
    wire.full.add(0)
    waiting = msg("waiting")
    submit(core, waiting, 0.0, wire)
    assert list(core.waiting) == [waiting] and core.ledger.count == 3
    core.close()
    for p in (inflight, retrying, waiting):
        assert isinstance(p.error, ClosedError), p
    assert done.accepted and done.error is None
    assert core.ledger.count == 0 and core.ledger.settled == 4
    assert sorted(e.id or "" for e in core.ledger.take_failures()) == [
        "inflight",
        "retrying",
        "waiting",
    ]


def test_next_wakeup_is_the_earliest_timer() -> None:
    assert make_core(2).next_wakeup(0.0) is None  # idle
    core, wire = make_core(2), Wire()
    submit(core, msg("a", deadline=5.0), 0.0, wire)
    assert core.next_wakeup(0.0) == pytest.approx(1.0)  # the attempt deadline
    core, wire = make_core(2, connected=()), Wire()
    submit(core, msg("a", deadline=3.0), 0.0, wire)
    assert core.next_wakeup(0.0) == pytest.approx(3.0)  # the message's own deadline
    core, wire = make_core(1), Wire()
    submit(core, msg("a", deadline=5.0, retry_until=5.0), 0.0, wire)
    core.on_reply(core.links[0], rej(1, "rate_limited", key="k", retry_after_ms=200), 0.1)
    assert core.next_wakeup(0.1) == pytest.approx(0.3)  # a retry
    core, wire = make_core(1), Wire()
    submit(core, msg("a", deadline=5.0), 0.0, wire)
    core.on_reply(core.links[0], rej(1, "not_ready", retry_after_ms=600), 0.0)
    assert core.next_wakeup(0.0) == pytest.approx(0.6)  # the end of an avoidance


def test_next_wakeup_ignores_the_attempt_deadline_of_an_answered_message() -> None:
    core, wire = make_core(1), Wire()
    submit(core, msg("a"), 0.0, wire)
    submit(core, msg("b", deadline=9.0), 0.5, wire)
    core.on_reply(core.links[0], acc(1), 0.6)
    assert core.next_wakeup(0.6) == pytest.approx(1.5)


def test_pool_core_refuses_an_empty_pool_duplicate_endpoints_and_a_bad_timeout() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PoolStrategy(Ledger(), [], 1.0)
    with pytest.raises(ValueError, match="only once"):
        PoolStrategy(Ledger(), [EPS[0], EPS[0]], 1.0)
    with pytest.raises(ValueError, match="attempt_timeout"):
        PoolStrategy(Ledger(), [EPS[0]], 0.0)


def test_messages_timed_out_together_are_resent_in_their_first_send_order() -> None:
    core, wire = make_core(2, connected=(0,)), Wire()
    for k in "abc":
        submit(core, msg(k), 0.0, wire)
    core.on_connected(core.links[1])
    core.expire(1.0)
    dispatch(core, 1.0, wire)
    assert wire.to(1) == ["a", "b", "c"]


# -- every message is settled exactly once, whatever happens ---------------------------------

CODES = ("invalid", "rate_limited", "not_ready", "shutting_down", "disabled", "internal")
Event = tuple[Any, ...]
adds = st.tuples(
    st.just("add"), st.sampled_from([math.inf, 0.5, 3.0, 20.0]), st.booleans(), st.booleans()
)
events = st.lists(
    st.one_of(
        adds,
        adds,
        st.tuples(st.just("tick"), st.sampled_from([0.0, 0.1, 0.3, 1.0, 2.5, 9.0])),
        st.tuples(st.just("acc"), st.integers(0, 2), st.integers(0, 30)),
        st.tuples(st.just("rej"), st.integers(0, 2), st.integers(0, 30), st.sampled_from(CODES)),
        st.tuples(st.just("down"), st.integers(0, 2)),
        st.tuples(st.just("up"), st.integers(0, 2)),
        st.tuples(st.just("full"), st.integers(0, 2), st.booleans()),
        st.tuples(
            st.just("reply"),
            st.integers(0, 2),
            st.sampled_from(
                [b"\xc1", _pack([]), _pack({"draining": True}), _pack({"acc": [[0, 2**40]]})]
            ),
        ),
    ),
    max_size=60,
)


def known_seq(link: Link, pick: int) -> int:
    """Mostly a seq in flight on ``link``; else one it gave up on (a late answer) or one it
    never sent."""
    outstanding, abandoned = sorted(link.outstanding), sorted(link.abandoned)
    if pick < 20 and outstanding:
        return outstanding[pick % len(outstanding)]
    if pick < 27 and abandoned:
        return abandoned[pick % len(abandoned)]
    return link.next_seq + pick % 3


def check_invariants(core: PoolStrategy, added: list[Pending]) -> None:
    done = [p for p in added if p.done()]
    assert core.ledger.count >= 0
    assert core.ledger.count == len(added) - len(done)
    assert core.ledger.settled == len(done)  # settled once each: the counter moves once per message
    for p in done:
        assert (p.broker is not None) == (p.error is None), p
        assert all(p not in link.outstanding.values() for link in core.links)
    retrying = [r[2] for r in core._retries]
    for p in added:
        if p.done():
            continue
        places = [link for link in core.links if any(q is p for q in link.outstanding.values())]
        in_waiting = sum(q is p for q in core.waiting)
        in_retries = sum(q is p for q in retrying)
        # Exactly one home: on one broker's wire, or waiting to be sent, or awaiting a retry.
        assert len(places) + in_waiting + in_retries == 1, (p, places, in_waiting, in_retries)
        if places:
            assert p._link is places[0] and places[0].outstanding[p.seq] is p
        else:
            assert p._link is None


def apply(core: PoolStrategy, wire: Wire, added: list[Pending], now: float, e: Event) -> float:
    kind = e[0]
    if kind == "add":
        _, timeout, retries, wait_disabled = e
        p = msg(
            f"m{len(added)}",
            deadline=now + timeout,
            retry_until=now + 5.0 if retries else 0.0,
            wait_disabled=wait_disabled,
        )
        added.append(p)
        submit(core, p, now, wire)
    elif kind == "tick":
        now += e[1]
    elif kind == "acc":
        link = core.links[e[1]]
        core.on_reply(link, acc(known_seq(link, e[2])), now)
    elif kind == "rej":
        link = core.links[e[1]]
        core.on_reply(link, rej(known_seq(link, e[2]), e[3], key="k", retry_after_ms=400), now)
    elif kind == "down":
        if core.links[e[1]].connected:
            core.on_disconnected(core.links[e[1]])
    elif kind == "up":
        core.on_connected(core.links[e[1]])
    elif kind == "full":
        (wire.full.add if e[2] else wire.full.discard)(e[1])
    else:
        core.on_reply(core.links[e[1]], e[2], now)
    # What the driver's pump does after reading replies and events.
    core.expire(now)
    dispatch(core, now, wire)
    return now


@settings(max_examples=400, deadline=None)
@given(script=events)
def test_random_events_settle_every_message_exactly_once(script: list[Event]) -> None:
    core, wire = make_core(3, connected=(0,)), Wire()
    added: list[Pending] = []
    now = 0.0
    for e in script:
        now = apply(core, wire, added, now, e)
        check_invariants(core, added)
    # Then the brokers behave: every link up and answering everything. Every message,
    # including those with no deadline, must end accepted or failed.
    wire.full.clear()
    for link in core.links:
        if not link.connected:
            core.on_connected(link)
    for _ in range(200):
        if core.ledger.count == 0:
            break
        now += 10.0  # past every avoidance and retry wait
        core.expire(now)
        dispatch(core, now, wire)
        for link in core.links:
            for seq in sorted(link.outstanding):
                core.on_reply(link, acc(seq), now)
        check_invariants(core, added)
    assert core.ledger.count == 0
    assert all(p.done() for p in added)
    failures = core.ledger.take_failures()
    assert len(failures) == sum(p.error is not None for p in added)


def test_timer_queues_stay_as_short_as_what_is_unsettled() -> None:
    """A publisher that never waits (its window never fills) still pumps every few
    messages: answered and settled entries leave the timer queues then, so they hold about
    what is in flight, not every message of the last ``timeout`` seconds."""
    core, wire = make_core(1), Wire()
    link = core.links[0]
    for i in range(5000):
        now = i * 0.001  # 1,000 msg/s with a 30 s deadline each
        submit(core, msg(f"m{i}", deadline=now + 30.0), now, wire)
        core.on_reply(link, acc(i + 1), now)  # answered at once
        if i % 32 == 31:
            core.expire(now)  # the driver pumps every 32 publishes
            assert len(core._deadlines) <= 32 and len(link.deadlines) <= 32
    assert core.ledger.count == 0 and core.ledger.settled == 5000
