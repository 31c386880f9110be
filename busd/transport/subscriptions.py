"""busd applies subscriptions itself (ZMQ_XPUB_MANUAL), per subscriber connection, with caps.

With XPUB_MANUAL libzmq applies no subscription by itself: it hands each subscribe
(``\\x01`` + prefix) and unsubscribe (``\\x00`` + prefix) message to busd, and
``setsockopt(ZMQ_SUBSCRIBE, prefix)`` right after reading one applies it to the connection
that sent it. Measured on libzmq 4.3.5 (tests/test_hostile_subscriptions.py):

- each message carries its connection's file descriptor (``zmq_msg_get(ZMQ_SRCFD)``), so
  busd can keep a record per connection;
- libzmq keeps every prefix a connection *asked for*, applied or not, until it asks to
  unsubscribe or disconnects (about 1 KiB per random 16-byte prefix): refusing to apply a
  prefix bounds the fan-out's work, not memory. So a connection holding more than
  ``CUT_AFTER_DENIED`` denied prefixes is disconnected;
- when a connection closes, libzmq reports one unsubscribe per prefix it had asked for,
  without a file descriptor. busd applies messages without one as they come (for a closed
  connection that changes nothing; an inproc subscriber has no fd, and is served without
  caps) and forgets a connection on the egress monitor's DISCONNECTED event (``forget``).
  The monitor is another socket: a subscription read after its connection's DISCONNECTED
  event is ignored when the fd is closed, and counted for the new connection when the fd is
  already reused by one (a skewed count, at most ``max_subscriptions`` per fd). So every
  decision is made again for each request, and a subscription is applied again even when
  busd's record says it is (libzmq's per-connection set ignores repeats): a stale record
  can skew a count, never what a subscriber receives.

A subscription to ``SYNC_PREFIX + token`` (busd_protocol.snapshots) is a *sync marker*, not a
subscription: it is handed to ``on_sync`` and never applied, and its unsubscribe is ignored.
One SUB connection's subscriptions are read in the order it sent them, so seeing the marker
proves the subscriptions it sent before are in force (docs/protocol.md §3.2).

With authentication on, ``SubscribePermit`` (below) judges each prefix for the identity its
connection's key proved; the state endpoint asks it about a snapshot's prefix too.

Disconnecting is ``busd.transport.peers`` (there is no per-peer close for XPUB).

Error handling: nothing here raises on a peer's input; a failed shutdown (the connection
already gone) is ignored, since the disconnect it wanted has happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import zmq

from busd.kernel.admission import Admission
from busd.logs import RateLimitedLog, get
from busd.transport import heap
from busd.transport.peers import Endpoint
from busd_protocol.envelope import MAX_TOPIC_BYTES
from busd_protocol.snapshots import SYNC_PREFIX

_log = get("subscriptions")
_NOBLOCK = zmq.NOBLOCK
_recv = zmq.backend.Socket.recv


# Denied prefixes a connection may hold before busd closes it. libzmq keeps every prefix a
# connection asks for, applied or not, and takes them faster than busd can judge them
# (``sockets.SUBSCRIPTION_HWM`` per call): the sooner the cut, the less a storm holds.
CUT_AFTER_DENIED = 64


class Counters(Protocol):
    """Where the counts go (``BrokerStats``)."""

    subscriptions: int  # distinct prefixes applied, over all connections
    subscribe_total: int
    unsubscribe_total: int
    subscriptions_denied: int
    subscriptions_forbidden: int
    subscribers_cut: int


class _Peer:
    __slots__ = ("address", "applied", "cut", "denied")

    def __init__(self, address: object):
        self.address = address
        self.applied: set[bytes] = set()
        self.denied: set[bytes] = set()
        self.cut = False  # busd closed it: what it still had queued is ignored


# Why an authenticated identity may not subscribe to a prefix, or None (busd.kernel.acl).
Permit = Callable[[str, bytes], "str | None"]
# Told of each sync marker: (token, monotonic now); busd.transport.snapshots.
OnSync = Callable[[bytes, float], None]
_SYNC_LEN = len(SYNC_PREFIX)


class Subscriptions:
    def __init__(self, counters: Counters, *, max_per_peer: int, budget: int):
        self.counters = counters
        # With authentication on, the permissions check (the broker sets it): each subscribe
        # is judged for the identity its connection's key proved (the message's User-Id).
        self.permit: Permit | None = None
        self.on_sync: OnSync | None = None  # sync markers go here (the broker sets it)
        self.max_per_peer = max_per_peer
        self.budget = budget
        self._peers: dict[int, _Peer] = {}
        self._refs: dict[bytes, int] = {}  # prefix -> connections it is applied for
        self._limited = RateLimitedLog(_log)
        self._trim_due = False  # a big record was dropped: hand libzmq's freed memory back
        self._trimmed = 0.0
        self._endpoint = Endpoint()  # see ``bound``

    def bound(self, endpoint: str) -> None:
        """The XPUB's resolved endpoint (``peers.Endpoint``)."""
        self._endpoint = Endpoint(endpoint)

    def read(self, xpub: zmq.Socket[bytes]) -> bool:
        """Handle up to ``budget`` subscription messages; True when more may be waiting."""
        more = True
        for _ in range(self.budget):
            try:
                frame = _recv(xpub, _NOBLOCK, False)
            except zmq.Again:
                more = False
                break
            self._handle(xpub, frame)
        # libzmq frees a closed connection's tries as busd reads on; once a second at most.
        if self._trim_due and (now := time.monotonic()) >= self._trimmed + 1.0:
            self._trim_due = False
            self._trimmed = now
            heap.release()
        return more

    def forget(self, fd: int) -> None:
        """The connection on ``fd`` closed: release what busd kept for it."""
        peer = self._peers.pop(fd, None)
        if peer is not None:
            if len(peer.applied) + len(peer.denied) > 64:
                self._trim_due = True
            self._release(peer)

    # -- internals ----------------------------------------------------------------------
    def _handle(self, xpub: zmq.Socket[bytes], frame: zmq.Frame) -> None:
        msg = frame.bytes
        kind, prefix = msg[:1], msg[1:]
        if kind not in (b"\x01", b"\x00"):
            return  # XPUB passes user messages a SUB cannot send; nothing to apply
        if prefix[:_SYNC_LEN] == SYNC_PREFIX:
            if kind == b"\x01" and self.on_sync is not None:
                self.on_sync(prefix[_SYNC_LEN:], time.monotonic())
            return  # a marker, never a subscription; its unsubscribe changes nothing
        try:
            fd = int(frame.get(zmq.SRCFD))
        except zmq.ZMQError:
            fd = -1
        st = self.counters
        if fd < 0:
            # No connection: libzmq reporting what a closed one had asked for (an unsubscribe
            # that applies to nothing), or an inproc subscriber, applied without caps.
            xpub.setsockopt(zmq.SUBSCRIBE if kind == b"\x01" else zmq.UNSUBSCRIBE, prefix)
            return
        peer = self._peers.get(fd)
        if peer is None:
            address = self._endpoint.peer(fd)
            if address is None:
                return  # the connection has closed since: there is nothing to apply it to
            peer = self._peers[fd] = _Peer(address)
        if peer.cut:
            return
        if kind == b"\x01":
            st.subscribe_total += 1
            reason = None if prefix in peer.applied else self._refusal(peer, prefix, frame)
            if reason is None:
                xpub.setsockopt(zmq.SUBSCRIBE, prefix)  # to the connection just read from
                if prefix not in peer.applied:
                    peer.applied.add(prefix)
                    peer.denied.discard(prefix)
                    refs = self._refs.get(prefix, 0)
                    if not refs:
                        st.subscriptions += 1
                    self._refs[prefix] = refs + 1
                return
            st.subscriptions_denied += 1
            peer.denied.add(prefix)
            self._limited.warning(
                "denied", "subscription denied", reason=reason, prefix=prefix[:64].hex()
            )
            if len(peer.denied) > CUT_AFTER_DENIED:
                self._cut(fd, peer)
            return
        st.unsubscribe_total += 1
        if prefix in peer.applied:
            xpub.setsockopt(zmq.UNSUBSCRIBE, prefix)
            peer.applied.discard(prefix)
            self._unref(prefix)
        else:
            peer.denied.discard(prefix)
        if not (peer.applied or peer.denied):
            del self._peers[fd]  # nothing left to remember

    def _refusal(self, peer: _Peer, prefix: bytes, frame: zmq.Frame) -> str | None:
        if len(prefix) > MAX_TOPIC_BYTES:
            return f"prefix over {MAX_TOPIC_BYTES} bytes can match no topic"
        if len(peer.applied) >= self.max_per_peer:
            return f"over {self.max_per_peer} subscriptions on one connection"
        if self.permit is not None:
            try:
                identity = str(frame.get("User-Id"))
            except zmq.ZMQError:
                identity = ""  # no identity: no permission (the ZAP handler was down)
            forbidden = self.permit(identity, prefix)
            if forbidden is not None:
                self.counters.subscriptions_forbidden += 1
                return forbidden
        return None

    def _unref(self, prefix: bytes) -> None:
        refs = self._refs[prefix] - 1
        if refs:
            self._refs[prefix] = refs
        else:
            del self._refs[prefix]
            self.counters.subscriptions -= 1

    def _release(self, peer: _Peer) -> None:
        for prefix in peer.applied:
            self._unref(prefix)
        peer.applied.clear()
        peer.denied.clear()

    def _cut(self, fd: int, peer: _Peer) -> None:
        """Disconnect the connection on ``fd`` if it is still the same peer."""
        self.counters.subscribers_cut += 1
        self._limited.warning(
            "cut", "subscriber disconnected: too many subscriptions", limit=self.max_per_peer
        )
        self._trim_due = True
        self._release(peer)
        peer.cut = True  # kept until the monitor reports the fd closed (``forget``)
        self._endpoint.cut(fd, peer.address)


class SubscribePermit:
    """The ``Permit`` of an authenticated busd, for subscriptions and snapshot requests alike:
    why an identity may not subscribe to a prefix under the permissions in force now
    (``Admission.trust``, replaced on each reload), and a denial told to ``on_denied``."""

    def __init__(self, admission: Admission):
        self.admission = admission
        # The trust control keeps the last denials for `busdctl acl` (the broker sets it).
        self.on_denied: Callable[[str, str, str], None] | None = None

    def __call__(self, identity: str, prefix: bytes) -> str | None:
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
