"""The broker task: owns the ROUTER (publisher ingress) and XPUB (subscriber egress) sockets.

Both sockets belong to this one task for their whole life because forwarding must not cross
a queue: a message is read, judged by the kernel and handed to libzmq's fan-out in one
synchronous step, and libzmq copies it to every matching subscriber. There are no
per-subscriber queues in Python; each subscriber's queue is its XPUB pipe, bounded by SNDHWM.

Each wake-up handles up to ``batch`` messages with frame-level non-blocking ``recv``/``send``,
then sends one reply per publisher for the whole wake-up (docs/protocol.md §2). A publish
may carry a batch of up to ``max_batch`` messages (``busd.transport.ingress`` reads it and
says which frames make which message); each is judged, forwarded and answered on its own.

Error handling: bad input is not an error but an answer (a stable code, counted, logged at
a limited rate with who sent it). An exception while judging one message is a bug in a
check: ``_judge`` answers that message ``internal``, it is counted, its traceback is logged
at a limited rate, it is not forwarded, and the loop goes on. Socket errors are not caught:
they end the task, and the app ends the process (exit 70) so the service manager restarts it
(crash-only; start-up is the recovery path).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import zmq

from busd.config import Config
from busd.kernel.admission import Admission
from busd.kernel.fences import Fences
from busd.kernel.sequences import TopicSequences
from busd.logs import RateLimitedLog, get
from busd.statistics import BrokerStatistics
from busd.transport import heap, sockets
from busd.transport.ingress import culprit, read_body, shape
from busd.transport.overlong import Overlong
from busd.transport.peers import DeafPublishers, Endpoint
from busd.transport.readiness import Readiness
from busd.transport.subscriptions import Subscriptions
from busd_protocol.codes import ROUTINE, Code, Reject
from busd_protocol.histogram import Histogram
from busd_protocol.replies import encode_reply, reject_entry
from busd_protocol.stamps import encode_stamp

_log = get("broker")
_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
# The backend's send skips the sugar layer's per-call checks (~0.2 µs a frame).
_send = zmq.backend.Socket.send
_QUIET = 0.1  # draining ends after this long without input
# Rejections not logged as "message rejected": routine refusals (rate limits, warm-up,
# shutdown) are counted only; an internal error is logged by _judge, with its traceback.
_NOT_LOGGED = ROUTINE | {Code.INTERNAL}


class BrokerStats:
    """Plain-int counters, written only by the broker task; read via ``statistics()``."""

    __slots__ = (
        "accepted",
        "batches",
        "bytes_accepted",
        "bytes_in",
        "fences",
        "frames_discarded",
        "latency",
        "overlong_messages",
        "publishers_cut",
        "received",
        "rejected",
        "replies_dropped",
        "replies_sent",
        "sequences",
        "subscribe_total",
        "subscribers_cut",
        "subscriptions",
        "subscriptions_denied",
        "subscriptions_forbidden",
        "unsubscribe_total",
    )

    def __init__(self) -> None:
        self.received = 0
        self.accepted = 0
        self.bytes_in = 0
        self.bytes_accepted = 0
        self.rejected: dict[Code, int] = dict.fromkeys(Code, 0)
        self.replies_sent = 0
        self.replies_dropped = 0
        self.subscriptions = 0
        self.subscribe_total = 0
        self.unsubscribe_total = 0
        self.subscriptions_denied = 0  # never applied: over a cap (docs/protocol.md §5)
        self.subscriptions_forbidden = 0  # denied by the permissions file (docs/security.md)
        self.subscribers_cut = 0  # subscriber connections closed for asking too much
        self.batches = 0
        self.frames_discarded = 0  # frames past the third, read and dropped
        self.overlong_messages = 0  # messages too long to discard in one wake-up
        self.publishers_cut = 0  # publisher connections closed for not reading replies
        self.latency = Histogram()  # receive -> forward, seconds (upper bound: batch time)
        self.sequences: TopicSequences | None = None  # set by the Broker that owns these
        self.fences: Fences | None = None

    def statistics(self) -> BrokerStatistics:
        seqs = self.sequences.statistics() if self.sequences is not None else None
        fences = self.fences
        return BrokerStatistics(
            received=self.received,
            accepted=self.accepted,
            bytes_in=self.bytes_in,
            bytes_accepted=self.bytes_accepted,
            rejected=dict(self.rejected),
            replies_sent=self.replies_sent,
            replies_dropped=self.replies_dropped,
            subscriptions=self.subscriptions,
            subscribe_total=self.subscribe_total,
            unsubscribe_total=self.unsubscribe_total,
            subscriptions_denied=self.subscriptions_denied,
            subscriptions_forbidden=self.subscriptions_forbidden,
            subscribers_cut=self.subscribers_cut,
            batches=self.batches,
            frames_discarded=self.frames_discarded,
            overlong_messages=self.overlong_messages,
            publishers_cut=self.publishers_cut,
            latency=self.latency.snapshot(),
            epoch=seqs.epoch if seqs is not None else 0,
            sequence_topics=seqs.topics if seqs is not None else 0,
            sequence_topics_expired=seqs.expired if seqs is not None else 0,
            fences=len(fences) if fences is not None else 0,
            fenced=fences.refused if fences is not None else 0,
        )


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
        self._ctx = ctx
        self.clock = clock  # monotonic seconds; the rate buckets share it
        self._log = RateLimitedLog(_log)  # per-message problems: bounded whatever the input
        self._draining = False
        self._warm_until = 0.0  # monotonic; publishes before it are answered not_ready
        self._ready: Readiness | None = None
        self._frame_slice = config.frame_slice
        self._max_batch = config.max_batch  # messages per publish (docs/protocol.md §1)
        self._max_body = 2 * config.max_batch  # frames after the header
        self._overlong: Overlong | None = None  # a message being discarded across wake-ups
        self._deaf = DeafPublishers()  # publishers not reading their replies
        self._hwm = config.reply_hwm
        self.subscriptions = Subscriptions(
            self.stats, max_per_peer=config.max_subscriptions, budget=config.subscription_batch
        )
        self._router: zmq.Socket[bytes] | None = None
        self._xpub: zmq.Socket[bytes] | None = None
        self.pub_endpoint = ""
        self.sub_endpoint = ""
        # The server's CURVE key pair (public, secret); None: authentication off. With it,
        # every message is judged for the identity its connection's key proved.
        self.curve: tuple[bytes, bytes] | None = None
        # Told of every forbidden publish and subscription (identity, what, topic or prefix):
        # the trust control keeps the last ones for `busdctl acl`.
        self.on_denied: Callable[[str, str, str], None] | None = None

    @property
    def bound(self) -> bool:
        return self._router is not None and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    def warming_up(self) -> float:
        """Seconds of warm-up left (0.0 once over); see ``_warmup_refusal``."""
        return max(0.0, self._warm_until - self.clock())

    def bind(self, before: Callable[[], None] | None = None) -> None:
        """Create both sockets with explicit limits and bind them; raises on failure.

        ``before`` runs once the sockets exist and before either is bound: the monitors attach
        there, so no connection is accepted before its monitor can report it."""
        cfg = self.config
        linger = int(cfg.linger * 1000)
        guards = sockets.PeerGuards(
            handshake_ms=round(cfg.handshake_timeout * 1000),
            heartbeat_ms=round(cfg.heartbeat_interval * 1000),
            heartbeat_timeout_ms=round(cfg.heartbeat_timeout * 1000),
        )
        self._router = sockets.router(
            self._ctx,
            hwm=cfg.pub_hwm,
            reply_hwm=cfg.reply_hwm,
            max_frame=cfg.max_frame_bytes,
            linger_ms=linger,
            guards=guards,
        )
        self._xpub = sockets.xpub(self._ctx, hwm=cfg.sub_hwm, linger_ms=linger, guards=guards)
        sockets.guard(self._router, self.curve)
        sockets.guard(self._xpub, self.curve)
        if self.curve is not None:
            self.subscriptions.permit = self._subscribe_refusal
        try:
            if before is not None:
                before()
            self.pub_endpoint = sockets.bind(self._router, cfg.pub_endpoint)
            self.sub_endpoint = sockets.bind(self._xpub, cfg.sub_endpoint)
            self.subscriptions.bound(self.sub_endpoint)
            self._deaf.endpoint = Endpoint(self.pub_endpoint)
        except Exception:
            self.close(linger=0)
            raise
        self._warm_until = self.clock() + cfg.warmup

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
        ready = self._ready = Readiness([self._router, self._xpub])
        batch = self.config.batch
        try:
            while not self._draining:
                handled = self._pump(batch, self._warmup_refusal())
                more = self.subscriptions.read(self._xpub)
                if handled >= batch or more or self._overlong is not None:
                    await asyncio.sleep(0)  # let other tasks run between full batches
                else:
                    await ready.wait()
            await self._drain(ready, batch)
        finally:
            ready.close()
            self._ready = None

    def _warmup_refusal(self) -> Reject | None:
        """While warming up, every publish is refused with ``not_ready``.

        A restarted broker of a pool would otherwise accept messages before its subscribers
        have reconnected (their reconnect interval is up to a second) and those messages
        would reach nobody. Refusing sends them to the pool's other brokers instead.
        """
        if self._warm_until == 0.0:
            return None
        left = self.warming_up()
        if not left:
            self._warm_until = 0.0  # over: later wake-ups skip the clock read
            return None
        ms = max(1, round(left * 1000))
        return Reject(
            Code.NOT_READY,
            f"busd is warming up for {ms} ms more: subscribers "
            "are reconnecting; retry then, or publish to another broker",
            {"retry_after_ms": ms},
        )

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
            handled = self._pump(batch, self._warmup_refusal())  # SIGTERM while warming
            answered += handled
            more = self.subscriptions.read(self._xpub)
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

    def _pump(self, limit: int, refuse: Reject | None = None) -> int:
        """Read, judge, forward and answer up to ``limit`` messages without blocking (a
        batch is read whole: one call may handle up to ``limit + max_batch - 1``)."""
        router, xpub = self._router, self._xpub
        assert router is not None and xpub is not None
        if self._overlong is not None:
            return self._continue_overlong(router)
        recv, xsend = router.recv, _send
        judge, refused = self._judge, self._refused
        fences = self.fences
        seqs = self.sequences
        numbers, epoch, stamp = seqs.current, seqs.epoch, encode_stamp
        authenticated = self.curve is not None
        identity: str | None = None
        unread = self._deaf.unread
        cap = self._max_body
        st = self.stats
        replies: dict[bytes, tuple[list[int], list[dict[str, Any]]]] = {}
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
                self._cut_publisher(ident, head)
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
                handled += self._answer_overlong(entry[1], over.verdict())
                continue
            seq, count, tail = shape(head.bytes, len(body))
            handled += count + (tail is not None)
            if count:
                assert seq is not None, "a batch has a readable header"
                if authenticated:
                    identity = str(head.get("User-Id"))
                # Once per batch, not per message (Fences.__len__ is a Python call); only
                # a refusal can set a fence, and then this is read again.
                fenced = bool(fences)
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
                        fenced = bool(fences)
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
            self._reply(router, replies)
        return handled

    def _refused(
        self,
        rejects: list[dict[str, Any]],
        seq: int | None,
        reject: Reject,
        *,
        identity: str | None,
        topic_b: bytes | None,
        env_b: bytes | None,
    ) -> None:
        """Count, answer (in ``rejects``, a reply's list) and maybe log one refusal."""
        self.stats.rejected[reject.code] += 1
        rejects.append(reject_entry(seq, reject))
        if reject.code is Code.FORBIDDEN and self.on_denied is not None and topic_b is not None:
            self.on_denied(identity or "", "publish", topic_b.decode(errors="replace"))
        if reject.code not in _NOT_LOGGED:
            suppressed = self._log.allow(reject.code)
            if suppressed is not None:
                fields: dict[str, object] = {
                    "code": reject.code.value,
                    "reason": reject.reason,
                    "seq": seq,
                }
                fields.update(culprit(topic_b, env_b))
                self._log.write(logging.WARNING, "message rejected", suppressed, fields)

    def _answer_overlong(
        self, rejects: list[dict[str, Any]], refusals: list[tuple[int | None, Reject]]
    ) -> int:
        """Count and answer an over-long publish's refusals; log it once."""
        rejected = self.stats.rejected
        for seq, reject in refusals:
            rejected[reject.code] += 1
            rejects.append(reject_entry(seq, reject))
        seq, reject = refusals[0]
        self._log.warning(
            reject.code,
            "message rejected",
            code=reject.code.value,
            reason=reject.reason,
            seq=seq,
            messages=len(refusals),
        )
        return len(refusals)

    def _cut_publisher(self, ident: bytes, frame: zmq.Frame) -> None:
        if self._deaf.cut(ident, frame):
            self.stats.publishers_cut += 1
            self._log.warning(
                "replies", "publisher disconnected: not reading its replies", limit=self._hwm
            )

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
        answered = self._answer_overlong(rejects, over.verdict())
        st.received += answered
        self._reply(router, {over.ident: ([], rejects)})
        return answered

    def _subscribe_refusal(self, identity: str, prefix: bytes) -> str | None:
        """Why ``identity`` may not subscribe to ``prefix`` under the permissions in force."""
        trust = self.admission.trust
        try:
            text = prefix.decode()
        except UnicodeDecodeError:
            return "a subscription prefix must be UTF-8, as topics are"
        if trust is not None and trust.may_subscribe(identity, text):
            return None
        if self.on_denied is not None:
            self.on_denied(identity, "subscribe", text)
        return f"identity {identity or '(none)'} may not subscribe to {text[:64]!r}"

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

    def _reply(
        self,
        router: zmq.Socket[bytes],
        replies: dict[bytes, tuple[list[int], list[dict[str, Any]]]],
    ) -> None:
        st = self.stats
        draining, batch = self._draining, self._max_batch
        for ident, (acc, rej) in replies.items():
            try:
                router.send(ident, _NOBLOCK | _SNDMORE)
                router.send(encode_reply(acc, rej, draining, batch), _NOBLOCK)
                st.replies_sent += 1
            except zmq.Again:
                # Not reading its replies: reply_hwm of them are queued. Its connection is
                # cut when its next message is read (``_cut_publisher``).
                st.replies_dropped += 1
                self._deaf.not_reading(ident)
            except zmq.ZMQError:
                st.replies_dropped += 1  # publisher gone (EHOSTUNREACH)
