"""The client's sockets: options set explicitly rather than trusting libzmq's defaults, and a
publisher's sockets (PublisherSockets): its DEALERs, written and read without blocking.
"""

from __future__ import annotations

import contextlib
from typing import Any

import zmq
import zmq.backend
from zmq.utils.monitor import parse_monitor_message

from busd_client.core import Strategy, dispatch
from busd_client.keys import ClientKeys
from busd_client.ledger import Link, Pending
from busd_protocol.frames import encode_header

__all__ = [
    "DEFAULT_PUB_ENDPOINT",
    "DEFAULT_SUB_ENDPOINT",
    "MONITOR_EVENTS",
    "PublisherSockets",
    "configure_dealer",
    "configure_sub",
]

DEFAULT_PUB_ENDPOINT = "tcp://127.0.0.1:7401"
DEFAULT_SUB_ENDPOINT = "tcp://127.0.0.1:7402"


def _reconnect(sock: zmq.Socket[bytes], ivl: float, ivl_max: float) -> None:
    _secure(sock)
    sock.setsockopt(zmq.RECONNECT_IVL, max(1, int(ivl * 1000)))
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, max(1, int(ivl_max * 1000)))
    # ZMTP heartbeats find a peer that vanished without closing TCP (a dead host, a cut
    # network), so libzmq drops the connection and reconnects instead of waiting for ever.
    sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)


def _secure(sock: zmq.Socket[bytes]) -> None:
    """CURVE with the keys the environment names (busd_client.keys); NULL without."""
    keys = ClientKeys.from_env()
    if keys is not None:
        keys.apply(sock)


def configure_dealer(
    sock: zmq.Socket[bytes], window: int, reconnect_ivl: float, reconnect_ivl_max: float
) -> None:
    """The publisher's DEALER.

    IMMEDIATE=1: a message is queued only on a completed connection. While busd is down a
    send fails at once (EAGAIN) and the publisher waits for the reconnection up to its
    timeout, so nothing piles up in a queue to be delivered long after it was reported
    timed out, and a dead broker costs no memory. Messages that were on a connection when it
    died are dropped by libzmq; they get no reply and time out.
    LINGER=0: close() happens after flush(); anything unsent by then was already reported.
    SNDHWM: the in-flight window bounds what is queued, so the HWM never blocks below it.
    RCVHWM: replies are small; room for a reply per in-flight message plus late ones.
    """
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, window + 64)
    sock.setsockopt(zmq.RCVHWM, 2 * window + 64)
    _reconnect(sock, reconnect_ivl, reconnect_ivl_max)


def configure_sub(
    sock: zmq.Socket[bytes], rcvhwm: int, reconnect_ivl: float, reconnect_ivl_max: float
) -> None:
    """The subscriber's SUB: bounded queue (delivery is at most once anyway), no linger."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    _reconnect(sock, reconnect_ivl, reconnect_ivl_max)


_NOBLOCK = zmq.NOBLOCK
_NOBLOCK_MORE = zmq.NOBLOCK | zmq.SNDMORE
_POLLOUT = zmq.POLLOUT
_Again = zmq.Again
# The backend's send skips pyzmq's sugar layer: about 3x cheaper per frame.
_send_frame = zmq.backend.Socket.send
# Connection up (handshake done, so the DEALER will queue to it) and connection lost.
MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


class PublisherSockets:
    """A publisher's DEALER per broker, connected to its endpoint, and when the strategy is
    ``monitored`` a monitor socket per DEALER. Opened together and closed together by the
    one driver that owns them; every call here is non-blocking.

    ``ctx`` may be a zmq.asyncio.Context (then ``poller`` is a zmq.asyncio.Poller): the
    driver awaits readiness on the sockets as the context made them (``owned``), registered
    in ``poller``, and all I/O goes through sync views of them (no future per frame).
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        strategy: Strategy,
        *,
        window: int,
        reconnect_ivl: float,
        reconnect_ivl_max: float,
        poller: zmq.Poller,
    ) -> None:
        self.strategy = strategy
        self.poller = poller  # the driver's: a zmq.Poller, or a zmq.asyncio.Poller
        self.owned: list[zmq.Socket[Any]] = []  # closed at the end, polled by the driver
        self.dealers: list[zmq.Socket[bytes]] = []  # sync views, in ``link.index`` order
        self.monitors: list[zmq.Socket[bytes]] = []
        try:
            for link in strategy.links:
                dealer = ctx.socket(zmq.DEALER)
                self.owned.append(dealer)
                sock: zmq.Socket[bytes] = zmq.Socket.shadow(dealer.underlying)
                self.dealers.append(sock)
                configure_dealer(sock, window, reconnect_ivl, reconnect_ivl_max)
                if strategy.monitored:
                    monitor = dealer.get_monitor_socket(MONITOR_EVENTS)
                    self.owned.append(monitor)
                    self.monitors.append(zmq.Socket.shadow(monitor.underlying))
                sock.connect(link.endpoint)
        except BaseException:
            self.close()
            raise
        for s in self.owned:
            poller.register(s, zmq.POLLIN)
        self._flags = [zmq.POLLIN] * len(self.dealers)

    def send(self, link: Link, p: Pending) -> bool:
        """Hand ``p``'s three frames to libzmq for ``link`` without blocking (header seq
        ``link.next_seq``); False when the socket would not take them."""
        sock = self.dealers[link.index]
        send = _send_frame
        try:
            send(sock, encode_header(link.next_seq), _NOBLOCK_MORE)
            send(sock, p.topic_frame, _NOBLOCK_MORE)
            send(sock, p.envelope, _NOBLOCK)
        except _Again:
            return False  # libzmq rolls back the parts of a message it could not finish
        return True

    def send_batch(self, link: Link, ps: list[Pending]) -> bool:
        """Hand ``ps`` to libzmq for ``link`` as one batch (docs/protocol.md §1.2: the
        header with seq ``link.next_seq``, then topic and envelope per message) without
        blocking; False when the socket would not take it (libzmq refuses a multipart
        message only at its first frame, so it is all or nothing)."""
        sock = self.dealers[link.index]
        send = _send_frame
        try:
            send(sock, encode_header(link.next_seq), _NOBLOCK_MORE)
        except _Again:
            return False
        last = ps[-1]
        for p in ps:
            send(sock, p.topic_frame, _NOBLOCK_MORE)
            send(sock, p.envelope, _NOBLOCK if p is last else _NOBLOCK_MORE)
        return True

    def pump(self, now: float) -> int:
        """Feed the strategy every reply and connection event already here, then let it
        apply its deadlines, then send what it names; return how many went out. Never
        blocks."""
        strategy = self.strategy
        links = strategy.links
        for link, sock in zip(links, self.dealers, strict=True):
            while True:
                try:
                    frame = sock.recv(_NOBLOCK)
                except _Again:
                    break
                strategy.on_reply(link, frame, now)
        if self.monitors:
            for link, monitor in zip(links, self.monitors, strict=True):
                while True:
                    try:
                        event = parse_monitor_message(monitor.recv_multipart(_NOBLOCK))
                    except _Again:
                        break
                    if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        strategy.on_connected(link)
                    elif event["event"] == zmq.EVENT_DISCONNECTED:
                        strategy.on_disconnected(link)
        else:
            for link, sock in zip(links, self.dealers, strict=True):
                if not link.connected and int(sock.getsockopt(zmq.EVENTS)) & _POLLOUT:
                    strategy.on_connected(link)  # writable again
        strategy.expire(now)
        return dispatch(strategy, now, self.send, self.send_batch)

    def watch(self) -> None:
        """Keep the poller waiting for output on the DEALER of a link that is down, when no
        monitor would say that it is back (a single broker: writable again)."""
        if self.monitors:
            return
        for link, sock in zip(self.strategy.links, self.owned, strict=True):
            want = zmq.POLLIN if link.connected else zmq.POLLIN | _POLLOUT
            if self._flags[link.index] != want:
                self.poller.register(sock, want)
                self._flags[link.index] = want

    def close(self) -> None:
        for sock in self.dealers:
            if self.monitors:
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
        for s in self.owned:  # the views share them: closing these closes everything
            s.close(linger=0)
