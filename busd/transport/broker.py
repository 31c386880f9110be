"""The broker task: owns the ROUTER (publisher ingress) and XPUB (subscriber egress) sockets,
and the state endpoint's ROUTER (``busd.transport.snapshots``: a snapshot's cut must fall
between two batches of forwarding).

Both sockets belong to this one task for their whole life because forwarding must not cross
a queue: a message is read, judged by the kernel and handed to libzmq's fan-out in one
synchronous step, and libzmq copies it to every matching subscriber. There are no
per-subscriber queues in Python; each subscriber's queue is its XPUB pipe, bounded by SNDHWM.

Each wake-up handles up to ``batch`` messages with frame-level non-blocking ``recv``/``send``,
then sends one reply per publisher for the whole wake-up (docs/protocol.md §2). A publish
may carry a batch of up to ``max_batch`` messages (``busd.transport.ingress`` reads it and
says which frames make which message); each is judged, forwarded and answered on its own.

Around that loop, each in its own module: the counters (``broker_stats.BrokerStats``), the
answers and replies to publishers and the cut of deaf ones (``answers.Answers``), the
warm-up's ``not_ready`` (``warmup.Warmup``), the over-long publish discarded across
wake-ups (``overlong.Overlong``), the subscribe permission (``subscriptions``), the
sockets' options (``sockets.broker_sockets``).

Error handling: bad input is not an error but an answer (a stable code, counted, logged at
a limited rate with who sent it). An exception while judging one message is a bug in a
check: ``_judge`` answers that message ``internal``, it is counted, its traceback is logged
at a limited rate, it is not forwarded, and the loop goes on. Socket errors are not caught:
they end the task, and the app ends the process (exit 70) so the service manager restarts it
(crash-only; start-up is the recovery path).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import zmq

from busd.config import Config
from busd.kernel.admission import Admission
from busd.kernel.fences import Fences
from busd.kernel.sequences import TopicSequences
from busd.kernel.state import StateCache
from busd.logs import RateLimitedLog, get
from busd.transport import heap, sockets
from busd.transport.answers import Answers, OnDenied, Replies
from busd.transport.broker_stats import BrokerStats
from busd.transport.ingress import culprit, read_body, shape
from busd.transport.overlong import Overlong
from busd.transport.peers import Endpoint
from busd.transport.readiness import Readiness
from busd.transport.snapshots import Snapshots
from busd.transport.subscriptions import SubscribePermit, Subscriptions
from busd.transport.warmup import Warmup
from busd_protocol.codes import Code, Reject
from busd_protocol.schemas.state import StateRule
from busd_protocol.stamps import encode_stamp

_log = get("broker")
_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
# The backend's send skips the sugar layer's per-call checks (~0.2 µs a frame).
_send = zmq.backend.Socket.send
_QUIET = 0.1  # draining ends after this long without input


class Broker:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        config: Config,
        admission: Admission,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.admission = admission
        self.stats = BrokerStats()
        self.fences = Fences()  # order through retries (kernel/fences.py)
        # The delivery stamp (busd_protocol.stamps): random per start, so a restart shows.
        self.sequences = TopicSequences(int.from_bytes(os.urandom(8), "big"), clock())
        self.stats.sequences, self.stats.fences = self.sequences, self.fences
        # The latest message per key of state schemas, and the endpoint serving it.
        self.state = StateCache(config.state_max_entries, config.state_max_bytes)
        self.snapshots = Snapshots(config, self.state, self.sequences, self._state_rules)
        self.stats.state, self.stats.snapshots = self.state, self.snapshots
        self._ctx = ctx
        self.clock = clock  # monotonic seconds; the rate buckets share it
        self._log = RateLimitedLog(_log)  # per-message problems: bounded whatever the input
        self._draining = False
        self._warmup = Warmup(clock)  # publishes before its end are answered not_ready
        self._ready: Readiness | None = None
        self._frame_slice = config.frame_slice
        self._max_batch = config.max_batch  # messages per publish (docs/protocol.md §1)
        self._max_body = 2 * config.max_batch  # frames after the header
        self._overlong: Overlong | None = None  # a message being discarded across wake-ups
        # Refusals, replies, deaf publishers (busd.transport.answers).
        self._answers = Answers(
            self.stats, self._log, max_batch=config.max_batch, hwm=config.reply_hwm
        )
        self._permit = SubscribePermit(admission)  # with authentication on (bind)
        self.subscriptions = Subscriptions(
            self.stats, max_per_peer=config.max_subscriptions, budget=config.subscription_batch
        )
        self.subscriptions.on_sync = self.snapshots.on_sync
        self._router: zmq.Socket[bytes] | None = None
        self._xpub: zmq.Socket[bytes] | None = None
        self.pub_endpoint = ""
        self.sub_endpoint = ""
        self.state_endpoint = ""
        # The server's CURVE key pair (public, secret); None: authentication off. With it,
        # every message is judged for the identity its connection's key proved.
        self.curve: tuple[bytes, bytes] | None = None

    @property
    def on_denied(self) -> OnDenied | None:
        """Told of every forbidden publish and subscription (identity, what, topic or
        prefix): the trust control keeps the last ones for `busdctl acl`."""
        return self._answers.on_denied

    @on_denied.setter
    def on_denied(self, told: OnDenied | None) -> None:
        self._answers.on_denied = self._permit.on_denied = told

    @property
    def bound(self) -> bool:
        return self._router is not None and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    def warming_up(self) -> float:
        """Seconds of warm-up left (0.0 once over; ``busd.transport.warmup``)."""
        return self._warmup.left()

    def bind(self, before: Callable[[], None] | None = None) -> None:
        """Create the three sockets with explicit limits (``sockets.broker_sockets``) and bind
        them; raises on failure.

        ``before`` runs once the sockets exist and before any is bound: the monitors attach
        there, so no connection is accepted before its monitor can report it."""
        cfg = self.config
        self._router, self._xpub, state = sockets.broker_sockets(self._ctx, cfg, self.curve)
        self.snapshots.socket = state
        if self.curve is not None:
            self.subscriptions.permit = self.snapshots.permit = self._permit
        try:
            if before is not None:
                before()
            self.pub_endpoint = sockets.bind(self._router, cfg.pub_endpoint)
            self.sub_endpoint = sockets.bind(self._xpub, cfg.sub_endpoint)
            self.subscriptions.bound(self.sub_endpoint)
            self.state_endpoint = self.snapshots.endpoint = sockets.bind(state, cfg.state_endpoint)
            self._answers.deaf.endpoint = Endpoint(self.pub_endpoint)
        except Exception:
            self.close(linger=0)
            raise
        self._warmup.start(cfg.warmup)

    def monitor_socket(self, which: str, events: int) -> zmq.Socket[bytes]:
        """A PAIR socket receiving ``which`` socket's monitor events (owned by the caller)."""
        sock = self._router if which == "ingress" else self._xpub
        assert sock is not None, "sockets are made by bind()"
        return sock.get_monitor_socket(events)

    def drain(self) -> None:
        """Start draining; idempotent.

        The ingress endpoint stays bound: libzmq's unbind would also cut the connections it
        accepted, dropping the messages queued on them unanswered. Instead busd keeps reading
        until input has been quiet for a moment or the deadline passes, answers what remains
        with ``shutting_down``, and closes.
        """
        self._draining = True
        if self._ready is not None:
            self._ready.wake()

    async def run(self) -> None:
        """Serve until drained: answer every message read, then return.

        Error handling: retries nothing. Bad input is answered, a bug in a check is
        answered ``internal`` (``_judge``); a socket error ends the task, and with it the
        process (exit 70): the broker is not restarted in place.
        """
        assert self._router is not None and self._xpub is not None, "bind() first"
        snaps = self.snapshots
        ready = self._ready = Readiness([self._router, self._xpub, snaps.socket])  # type: ignore[list-item]
        batch = self.config.batch
        try:
            while not self._draining:
                handled = self._pump(batch, self._warmup.refusal())
                more = self.subscriptions.read(self._xpub)
                more = snaps.serve(self.clock()) or more
                if handled >= batch or more or self._overlong is not None:
                    await asyncio.sleep(0)  # let other tasks run between full batches
                else:
                    await ready.wait(snaps.wait_hint(self.clock()))
            await self._drain(ready, batch)
        finally:
            ready.close()
            self._ready = None

    async def _drain(self, ready: Readiness, batch: int) -> None:
        """Keep answering until input is quiet or ``drain_timeout`` passes, then refuse
        what is left with ``shutting_down``.

        Error handling: as ``run``: per-message problems are answers; a socket error ends
        the drain and the task (the app exits 70).
        """
        assert self._xpub is not None
        deadline = self.clock() + self.config.drain_timeout
        answered = 0
        while (left := deadline - self.clock()) > 0:
            handled = self._pump(batch, self._warmup.refusal())  # SIGTERM while warming
            answered += handled
            more = self.subscriptions.read(self._xpub)
            more = self.snapshots.serve(self.clock(), draining=True) or more
            if handled >= batch or more or self._overlong is not None:
                await asyncio.sleep(0)
            elif not await ready.wait(min(_QUIET, left)):
                break
        # Past the deadline: whatever is still queued is answered, not forwarded.
        bye = Reject(Code.SHUTTING_DOWN, "busd is shutting down")
        refused = 0
        while self._overlong is not None:
            refused += self._pump(1, refuse=bye)
        refused += self._pump(1 << 30, refuse=bye)
        _log.info("drained", extra={"answered": answered, "refused": refused})

    def close(self, linger: float | None = None) -> None:
        ms = None if linger is None else int(linger * 1000)
        for sock in (self._router, self._xpub):
            if sock is not None:
                sock.close(linger=ms)
        self._router = self._xpub = None
        self.snapshots.close(ms)

    def _pump(self, limit: int, refuse: Reject | None = None) -> int:
        """Read, judge, forward and answer up to ``limit`` messages without blocking (a
        batch is read whole: one call may handle up to ``limit + max_batch - 1``)."""
        router, xpub = self._router, self._xpub
        assert router is not None and xpub is not None
        if self._overlong is not None:
            return self._continue_overlong(router)
        recv, xsend = router.recv, _send
        answers = self._answers
        judge, refused = self._judge, answers.refused
        fences = self.fences
        fence_table = fences.table
        seqs = self.sequences
        numbers, epoch, stamp = seqs.current, seqs.epoch, encode_stamp
        authenticated = self.curve is not None
        admission, state = self.admission, self.state
        identity: str | None = None
        unread = answers.deaf.unread
        cap = self._max_body
        st = self.stats
        replies: Replies = {}
        now = self.clock()
        started = time.perf_counter()
        handled = accepted = bytes_in = bytes_accepted = 0
        while handled < limit:
            try:
                ident = recv(_NOBLOCK)
            except zmq.Again:
                break
            head = recv(copy=False)
            if unread and ident in unread:
                answers.cut(ident, head)
            body, ended = read_body(recv, head.more, cap)
            entry = replies.get(ident)
            if entry is None:
                entry = replies[ident] = ([], [])
            if not ended:  # over-long: drop up to frame_slice more frames now
                over = Overlong(ident, head.bytes, 1 + cap, self._max_batch)
                extra, ended = over.resume(router, self._frame_slice)
                st.frames_discarded += extra
                if not ended:  # the rest is read in later wake-ups
                    self._overlong = over
                    st.overlong_messages += 1
                    if not (entry[0] or entry[1]):
                        del replies[ident]
                    break
                handled += answers.overlong(entry[1], over.verdict())
                continue
            seq, count, tail = shape(head.bytes, len(body))
            handled += count + (tail is not None)
            if count:
                assert seq is not None, "a batch has a readable header"
                if authenticated:
                    identity = str(head.get("User-Id"))
                # Once per batch, and a dict's truth test (Fences.table), not a call to
                # Fences.__len__; only a refusal can set a fence, and then this is read again.
                fenced = bool(fence_table)
                pairs = iter(body)  # a lone last topic is left out: it is ``tail``
                for topic_f, env_f in zip(pairs, pairs, strict=False):
                    topic_b, env_b = topic_f.bytes, env_f.bytes
                    size = len(env_b)
                    bytes_in += size
                    reject = refuse
                    if reject is None and fenced:
                        reject = fences.check(ident, topic_b, env_b, now)
                        if reject is not None:
                            self.admission.fenced(reject, now)
                    if reject is None:
                        reject = judge(topic_b, env_b, now, identity)
                    if reject is None:
                        n = numbers.get(topic_b)
                        if n is None:
                            n = seqs.revive(topic_b)
                            numbers = seqs.current
                        n += 1
                        numbers[topic_b] = n
                        xsend(xpub, topic_b, _SNDMORE)
                        xsend(xpub, env_b, _SNDMORE)
                        xsend(xpub, stamp(epoch, n))
                        if fenced:
                            fences.accepted(ident, topic_b)
                        if admission.state_key is not None:  # a state schema's message
                            state.record(admission.state_key, topic_b, env_b, epoch, n)
                        accepted += 1
                        bytes_accepted += size
                        acc = entry[0]
                        if acc and acc[-1] == seq - 1:
                            acc[-1] = seq
                        else:
                            acc.append(seq)
                            acc.append(seq)
                    else:
                        fences.refused_with(ident, topic_b, env_b, reject, now)
                        fenced = bool(fence_table)
                        refused(
                            entry[1], seq, reject, identity=identity, topic_b=topic_b, env_b=env_b
                        )
                    seq += 1
            if tail is not None:
                rest = body[2 * count : 2 * count + 2]
                refused(
                    entry[1],
                    seq,
                    tail,
                    identity=identity,
                    topic_b=rest[0].bytes if rest else None,
                    env_b=rest[1].bytes if len(rest) > 1 else None,
                )
        if handled:
            seqs.tick(now)
            if fences:
                fences.sweep(now)
            st.received += handled
            st.accepted += accepted
            st.bytes_in += bytes_in
            st.bytes_accepted += bytes_accepted
            st.batches += 1
            if accepted:
                st.latency.observe(time.perf_counter() - started, accepted)
            answers.send(router, replies, self._draining)
        return handled

    def _continue_overlong(self, router: zmq.Socket[bytes]) -> int:
        """Read one more slice of the over-long message (``busd.transport.overlong``); answer
        it once it ends (1 handled)."""
        over = self._overlong
        assert over is not None
        extra, ended = over.resume(router, self._frame_slice)
        st = self.stats
        st.frames_discarded += extra
        if not ended:
            return 0
        self._overlong = None
        heap.release()
        rejects: list[dict[str, Any]] = []
        answered = self._answers.overlong(rejects, over.verdict())
        st.received += answered
        self._answers.send(router, {over.ident: ([], rejects)}, self._draining)
        return answered

    def _state_rules(self) -> dict[str, StateRule]:
        return self.admission.state_rules

    def _judge(
        self, topic_b: bytes, env_b: bytes, now: float, identity: str | None
    ) -> Reject | None:
        """``Admission.decide``; an exception is a bug in a check: this message is answered
        ``internal`` (and counted so by ``_pump``), the traceback is logged at a limited rate
        per exception type, and the next message is judged as usual."""
        try:
            return self.admission.decide(topic_b, env_b, now, identity)
        except Exception as exc:
            name = type(exc).__name__
            self._log.error(f"internal.{name}", "check failed", exc, **culprit(topic_b, env_b))
            return Reject(Code.INTERNAL, f"busd failed while checking this message ({name})")
