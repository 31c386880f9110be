"""The state endpoint: snapshots of the state cache (docs/protocol.md §3.2).

A ROUTER socket owned by the broker task, like ingress and egress: a snapshot's cut is taken
between two batches of forwarding, so it is a consistent cut of the stream (every message
forwarded before it is in the cut and below its positions, none after). ``serve`` runs once
per broker wake-up:

- reads up to ``_REQUESTS_PER_WAKE`` requests; each is answered ``bad_request``,
  ``forbidden`` (the identity may not subscribe to the prefix), ``busy`` (``snapshot_max``
  snapshots in progress), ``shutting_down`` (draining), or started;
- a request with ``sync`` is *parked* until its token is seen on the subscription stream
  (``on_sync``, from busd.transport.subscriptions), then cut; not seen within
  ``SYNC_WAIT``: ``not_subscribed``. Without ``sync`` the cut is made at once;
- the cut copies the entries (a list of tuples) and the sequence numbers (two dicts) at C
  speed; filtering by prefix and sending happen lazily, at most ``_PARTS_PER_WAKE`` parts a
  wake-up over all snapshots, so a 100,000-entry snapshot does not stall live traffic;
- sends use NOBLOCK: at EAGAIN (the client's SNDHWM is full: it is not reading) the part is
  kept and sent again on a later wake-up; a snapshot not finished within
  ``snapshot_timeout``, or whose client is gone, is *abandoned* (counted; nothing more sent).

Error handling: a client's bad input is an answer (a stable code, counted); nothing a
client sends raises. Socket errors other than EAGAIN/EHOSTUNREACH end the broker task as
any other socket error does (crash-only).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import zmq

from busd.config import Config
from busd.kernel.sequences import TopicSequences
from busd.kernel.state import Entry, StateCache
from busd.logs import RateLimitedLog, get
from busd.statistics import SnapshotStatistics
from busd_protocol.histogram import Histogram
from busd_protocol.schemas.state import StateRule
from busd_protocol.snapshots import (
    SYNC_WAIT,
    SnapshotError,
    SnapshotRequest,
    encode_end,
    encode_error,
    encode_part_head,
    parse_request,
)
from busd_protocol.stamps import encode_stamp

_log = get("snapshots")
_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
_MORE = _NOBLOCK | _SNDMORE
# The backend's send skips the sugar layer's per-call checks (as the broker's forwarding).
_send = zmq.backend.Socket.send
_REQUESTS_PER_WAKE = 64
_PARTS_PER_WAKE = 2  # 512 entries at the default part size: under 1 ms of the loop
_TOKENS_MAX = 4096  # sync tokens remembered (seen, not yet used by a request)
_TOKEN_KEEP = 60.0  # seconds a seen token is remembered
_RETRY = 0.005  # seconds before trying a blocked send again
_SCAN = 4096  # entries looked at per part built (a narrow prefix skips most of them)
OUTCOMES = ("ok", *(e.value for e in SnapshotError), "abandoned")

# Why an authenticated identity may not subscribe to a prefix, or None.
Permit = Callable[[str, bytes], "str | None"]


class _Snapshot:
    __slots__ = (
        "current",
        "deadline",
        "entries",
        "epoch",
        "ident",
        "next",
        "parked_until",
        "part",
        "pending",
        "prefix",
        "previous",
        "req",
        "sent",
        "started",
        "sync",
    )

    def __init__(self, ident: bytes, request: SnapshotRequest, now: float, timeout: float):
        self.ident = ident
        self.req = request.req
        self.prefix = request.prefix.encode()
        self.sync = request.sync
        self.started = now
        self.deadline = now + timeout
        self.parked_until = now + SYNC_WAIT if request.sync is not None else 0.0
        self.entries: list[Entry] | None = None  # the cut; None while parked
        self.current: dict[bytes, int] = {}
        self.previous: dict[bytes, int] = {}
        self.epoch = 0
        self.next = 0  # index in entries of the next one to look at
        self.part = 0
        self.sent = 0  # entries sent
        self.pending: list[bytes] | None = None  # a built part whose send met EAGAIN


class Snapshots:
    """The state endpoint's requests and the snapshots in progress (broker task only)."""

    def __init__(
        self,
        config: Config,
        cache: StateCache,
        sequences: TopicSequences,
        rules: Callable[[], dict[str, StateRule]],
    ) -> None:
        self.cache = cache
        self.sequences = sequences
        self.rules = rules
        self.max_active = config.snapshot_max
        self.part_size = config.snapshot_part
        self.timeout = config.snapshot_timeout
        self.permit: Permit | None = None  # with authentication on (the broker sets it)
        self.socket: zmq.Socket[bytes] | None = None
        self.endpoint = ""
        self._tokens: dict[bytes, float] = {}  # sync token -> monotonic time seen
        self._parked: list[_Snapshot] = []
        self._active: list[_Snapshot] = []
        self._blocked_until = 0.0
        self._limited = RateLimitedLog(_log)
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.duration = Histogram()
        self.entries_sent = 0

    # -- the subscription stream ----------------------------------------------------------
    def on_sync(self, token: bytes, now: float) -> None:
        """A SUB connection subscribed to ``SYNC_PREFIX + token``: its earlier subscriptions
        are in force (busd.transport.subscriptions)."""
        if len(token) > 64:
            return  # never a token busd issued a request for (SYNC_TOKEN): not kept
        tokens = self._tokens
        tokens.pop(token, None)
        tokens[token] = now
        while len(tokens) > _TOKENS_MAX:
            del tokens[next(iter(tokens))]

    # -- serving ----------------------------------------------------------------------------
    def serve(self, now: float, draining: bool = False) -> bool:
        """One wake-up's work; True when there is more to do at once."""
        sock = self.socket
        if sock is None:
            return False
        self.cache.sweep(now)
        more = self._read(sock, now, draining)
        if draining and (self._parked or self._active):
            self._refuse_all(sock, now)
        if self._parked:
            self._unpark(sock, now)
        if self._active and now >= self._blocked_until:
            more = self._send(sock, now) or more
        return more

    def wait_hint(self, now: float) -> float | None:
        """How long the broker may sleep without input before ``serve`` has work again."""
        hints = []
        if self._active:
            hints.append(max(self._blocked_until - now, _RETRY))
        if self._parked:
            hints.append(max(min(s.parked_until for s in self._parked) - now, 0.0))
        if self.cache.entries:
            hints.append(1.0)  # the TTL sweep
        return min(hints) if hints else None

    def refuse_all(self) -> None:
        """Draining: answer every parked and active snapshot ``shutting_down``."""
        if self.socket is not None:
            self._refuse_all(self.socket, time.monotonic())

    def close(self, linger_ms: int | None) -> None:
        if self.socket is not None:
            self.socket.close(linger=linger_ms)
            self.socket = None

    def statistics(self) -> SnapshotStatistics:
        return SnapshotStatistics(
            endpoint=self.endpoint,
            requests=dict(self.outcomes),
            active=len(self._active) + len(self._parked),
            entries_sent=self.entries_sent,
            duration=self.duration.snapshot(),
        )

    # -- internals ----------------------------------------------------------------------
    def _read(self, sock: zmq.Socket[bytes], now: float, draining: bool) -> bool:
        for _ in range(_REQUESTS_PER_WAKE):
            try:
                ident = sock.recv(_NOBLOCK)
            except zmq.Again:
                return False
            frames = [sock.recv(copy=False)]
            while frames[-1].more:
                frames.append(sock.recv(copy=False))
                if len(frames) > 8:  # read the rest, keep none of it
                    while sock.recv(copy=False).more:
                        pass
                    break
            self._request(sock, ident, frames, now, draining)
        return True

    def _request(
        self,
        sock: zmq.Socket[bytes],
        ident: bytes,
        frames: list[zmq.Frame],
        now: float,
        draining: bool,
    ) -> None:
        if len(frames) != 1:
            self._error(sock, ident, None, SnapshotError.BAD_REQUEST, "a request is one frame")
            return
        parsed = parse_request(frames[0].bytes)
        if not isinstance(parsed, SnapshotRequest):
            self._error(sock, ident, parsed[0], SnapshotError.BAD_REQUEST, parsed[1])
            return
        if draining:
            self._error(sock, ident, parsed.req, SnapshotError.SHUTTING_DOWN, "busd is draining")
            return
        if self.permit is not None:
            try:
                identity = str(frames[0].get("User-Id"))
            except zmq.ZMQError:
                identity = ""
            refusal = self.permit(identity, parsed.prefix.encode())
            if refusal is not None:
                self._error(sock, ident, parsed.req, SnapshotError.FORBIDDEN, refusal)
                return
        if len(self._active) + len(self._parked) >= self.max_active:
            self._error(
                sock,
                ident,
                parsed.req,
                SnapshotError.BUSY,
                f"{self.max_active} snapshots are in progress; retry shortly",
            )
            return
        snap = _Snapshot(ident, parsed, now, self.timeout)
        token = None if snap.sync is None else snap.sync.encode()
        if token is not None and self._tokens.pop(token, None) is None:
            self._parked.append(snap)
            return
        self._cut(snap)

    def _cut(self, snap: _Snapshot) -> None:
        seqs = self.sequences
        snap.entries = self.cache.cut()
        snap.current = dict(seqs.current)
        snap.previous = dict(seqs.previous)
        snap.epoch = seqs.epoch
        self._active.append(snap)

    def _unpark(self, sock: zmq.Socket[bytes], now: float) -> None:
        tokens = self._tokens
        waiting = []
        for snap in self._parked:
            token = snap.sync.encode() if snap.sync is not None else b""
            if tokens.pop(token, None) is not None:
                self._cut(snap)
            elif now >= snap.parked_until:
                self._error(
                    sock,
                    snap.ident,
                    snap.req,
                    SnapshotError.NOT_SUBSCRIBED,
                    f"the sync subscription was not seen within {SYNC_WAIT:g} s: subscribe the "
                    "SUB socket to SYNC_PREFIX + sync on this busd before asking",
                )
            else:
                waiting.append(snap)
        self._parked = waiting
        if tokens:  # forget old tokens
            while tokens and next(iter(tokens.values())) < now - _TOKEN_KEEP:
                del tokens[next(iter(tokens))]

    def _send(self, sock: zmq.Socket[bytes], now: float) -> bool:
        budget = _PARTS_PER_WAKE
        finished: list[_Snapshot] = []
        more = False
        for snap in self._active:
            while budget:
                if now >= snap.deadline:
                    self._abandon(snap, "not finished within snapshot_timeout")
                    finished.append(snap)
                    break
                if snap.pending is None:
                    snap.pending = self._build(snap, now)
                    if snap.pending is None:  # a slice scanned, nothing under the prefix
                        budget -= 1
                        continue
                outcome = self._try(sock, snap)
                if outcome is None:  # EAGAIN: keep it for a later wake-up
                    self._blocked_until = now + _RETRY
                    break
                budget -= 1
                if outcome is False:  # client gone
                    self._abandon(snap, "client gone")
                    finished.append(snap)
                    break
                if snap.entries is None:  # the end frame went
                    self.outcomes["ok"] += 1
                    self.duration.observe(now - snap.started)
                    finished.append(snap)
                    break
            else:
                more = True
        if finished:
            self._active = [s for s in self._active if s not in finished]
        return more and bool(self._active)

    def _build(self, snap: _Snapshot, now: float) -> list[bytes] | None:
        """The next part; the end frame once every entry is sent; None when ``_SCAN``
        entries were looked at and none is under the prefix (more on the next call)."""
        entries = snap.entries
        assert entries is not None
        prefix, size = snap.prefix, self.part_size
        frames: list[bytes] = [b""]
        count, i, n = 0, snap.next, len(entries)
        stop = min(n, i + _SCAN) if prefix else n
        stamp = encode_stamp
        while i < stop and count < size:
            topic_b, env_b, epoch, seq, expires, _key = entries[i]
            i += 1
            if expires > now and topic_b.startswith(prefix):
                frames += (topic_b, env_b, stamp(epoch, seq))
                count += 1
        snap.next = i
        if count:
            frames[0] = encode_part_head(snap.req, snap.part)
            snap.part += 1
            snap.sent += count
            return frames
        if i < n:
            return None
        # Every entry is sent: the end frame, with the positions at the cut.
        topics = {
            t.decode(errors="replace"): s
            for numbers in (snap.previous, snap.current)
            for t, s in numbers.items()
            if t.startswith(prefix)
        }
        rules = self.rules()
        return [encode_end(snap.req, snap.epoch, snap.sent, topics, rules)]

    def _try(self, sock: zmq.Socket[bytes], snap: _Snapshot) -> bool | None:
        """Send the pending part: True sent, None EAGAIN (kept), False client gone."""
        frames = snap.pending
        assert frames is not None
        try:
            sock.send(snap.ident, _NOBLOCK | _SNDMORE)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        # Once the identity frame is taken, the rest of the message always is (libzmq
        # checks the pipe's room for the first frame only).
        last = len(frames) - 1
        send = _send
        for i in range(last):
            send(sock, frames[i], _MORE)
        send(sock, frames[last], _NOBLOCK)
        snap.pending = None
        if last == 0:
            snap.entries = None  # the end frame (a part has 4 frames or more): done
        else:
            self.entries_sent += last // 3
        return True

    def _abandon(self, snap: _Snapshot, why: str) -> None:
        self.outcomes["abandoned"] += 1
        self._limited.warning("abandoned", "snapshot abandoned", reason=why, req=snap.req)

    def _refuse_all(self, sock: zmq.Socket[bytes], now: float) -> None:
        for snap in self._parked + self._active:
            self._error(sock, snap.ident, snap.req, SnapshotError.SHUTTING_DOWN, "busd is draining")
        self._parked = []
        self._active = []

    def _error(
        self,
        sock: zmq.Socket[bytes],
        ident: bytes,
        req: int | None,
        code: SnapshotError,
        reason: str,
    ) -> None:
        self.outcomes[code.value] += 1
        if code is SnapshotError.BAD_REQUEST:
            self._limited.warning("bad_request", "snapshot request refused", reason=reason)
        try:
            sock.send(ident, _NOBLOCK | _SNDMORE)
            sock.send(encode_error(req, code, reason), _NOBLOCK)
        except zmq.ZMQError:
            pass  # gone or not reading: the answer is lost, the count stays
