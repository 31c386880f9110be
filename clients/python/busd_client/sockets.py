"""Socket options, set explicitly rather than trusting libzmq's defaults."""

from __future__ import annotations

import zmq

from busd_client.keys import ClientKeys

__all__ = ["DEFAULT_PUB_ENDPOINT", "DEFAULT_SUB_ENDPOINT", "configure_dealer", "configure_sub"]

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
