"""The state view's sockets: per broker a DEALER to its state endpoint and a SUB to its
egress, each with a monitor, read and written without blocking for the view's core
(state_core.py) by whichever driver waits for them (state_view.py, aio_state.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from busd_client.pool_file import PoolFileError, load_pool
from busd_client.sockets import DEFAULT_SUB_ENDPOINT, configure_dealer, configure_sub
from busd_client.state_core import StateCore
from busd_protocol.snapshots import DEFAULT_STATE_ENDPOINT

__all__ = ["StateBroker", "StateSockets", "pool_state_brokers", "state_brokers"]

_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
_NOBLOCK = zmq.NOBLOCK
_Again = zmq.Again
# Read per broker per pump, so that one broker's snapshot does not starve the others' live
# streams, nor the deadlines (the rest is read at the next pump, at once).
_BUDGET = 20_000  # live messages
_REPLIES = 16  # snapshot replies (up to 256 entries each)


@dataclass(frozen=True, slots=True)
class StateBroker:
    """Where one broker serves snapshots (``state_endpoint``) and live messages
    (``sub_endpoint``)."""

    state_endpoint: str = DEFAULT_STATE_ENDPOINT
    sub_endpoint: str = DEFAULT_SUB_ENDPOINT


def pool_state_brokers(path: str | os.PathLike[str]) -> list[StateBroker]:
    """The brokers of a pool file (pool_file.py), each of which must name its
    ``state_endpoint`` (``PoolFileError`` otherwise)."""
    brokers = []
    for entry in load_pool(path):
        if entry.state_endpoint is None:
            raise PoolFileError(os.fspath(path), f"broker {entry.name!r}: no state_endpoint")
        brokers.append(StateBroker(entry.state_endpoint, entry.sub_endpoint))
    return brokers


def state_brokers(brokers: Iterable[StateBroker | tuple[str, str]]) -> list[StateBroker]:
    """Brokers from ``StateBroker`` values or (state endpoint, sub endpoint) pairs."""
    found = [b if isinstance(b, StateBroker) else StateBroker(*b) for b in brokers]
    if not found:
        raise ValueError("a state view needs at least one broker")
    if len({b.state_endpoint for b in found}) != len(found):
        raise ValueError("a broker is given twice (same state endpoint)")
    return found


class StateSockets:
    """The sockets of one view, made by ``ctx`` (a zmq.Context or zmq.asyncio.Context) and
    registered in ``poller`` (the driver's); all I/O goes through sync views of them."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        core: StateCore,
        brokers: Sequence[StateBroker],
        *,
        rcvhwm: int,
        reconnect_ivl: float,
        reconnect_ivl_max: float,
        poller: zmq.Poller,
    ) -> None:
        self.core = core
        self.owned: list[zmq.Socket[Any]] = []
        self.dealers: list[zmq.Socket[bytes]] = []
        self.dealer_monitors: list[zmq.Socket[bytes]] = []
        self.subs: list[zmq.Socket[bytes] | None] = []
        self.sub_monitors: list[zmq.Socket[bytes] | None] = []
        prefix = core.prefix.encode()
        try:
            for broker in brokers:
                dealer = self._own(ctx.socket(zmq.DEALER), self.dealer_monitors)
                configure_dealer(dealer, 64, reconnect_ivl, reconnect_ivl_max)
                dealer.setsockopt(zmq.RCVHWM, 0)  # parts are bounded by busd's snapshot
                # IMMEDIATE=1 (a publisher's) ends the pipe at once when the connection
                # drops, even while a part (769 frames) is half read: libzmq 4.3 aborts
                # then (fq.cpp:80 "!_more"). Requests only go out on a live connection
                # anyway (the core waits for the monitor's word), so the pipe may stay.
                dealer.setsockopt(zmq.IMMEDIATE, 0)
                self.dealers.append(dealer)
                dealer.connect(broker.state_endpoint)
                if not core.live:
                    self.subs.append(None)
                    self.sub_monitors.append(None)
                    continue
                sub = self._own(ctx.socket(zmq.SUB), self.sub_monitors)
                configure_sub(sub, rcvhwm, reconnect_ivl, reconnect_ivl_max)
                self.subs.append(sub)
                sub.connect(broker.sub_endpoint)
                sub.setsockopt(zmq.SUBSCRIBE, prefix)
        except BaseException:
            self.close()
            raise
        for s in self.owned:
            poller.register(s, zmq.POLLIN)

    def _own(self, sock: zmq.Socket[Any], monitors: list[Any]) -> zmq.Socket[bytes]:
        """A sync view of ``sock``; its monitor (made before it connects, so no event is
        missed) goes to ``monitors``."""
        self.owned.append(sock)
        monitor = sock.get_monitor_socket(_EVENTS)
        self.owned.append(monitor)
        monitors.append(zmq.Socket.shadow(monitor.underlying))
        view: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        return view

    def pump(self, now: float, wall: float) -> None:
        """Everything already here into the core, its deadlines, then what it asks for.
        Never blocks."""
        core = self.core
        for link in core.links:
            i = link.index
            for up in self._events(self.dealer_monitors[i]):
                core.on_dealer(link, up, now, wall)
            sub, sub_monitor = self.subs[i], self.sub_monitors[i]
            if sub is not None and sub_monitor is not None:
                for up in self._events(sub_monitor):
                    core.on_sub(link, up, now, wall)
                for _ in range(_BUDGET):
                    try:
                        frames = sub.recv_multipart(_NOBLOCK)
                    except _Again:
                        break
                    core.on_live(link, frames, now, wall)
            dealer = self.dealers[i]
            for _ in range(_REPLIES):
                try:
                    frames = dealer.recv_multipart(_NOBLOCK)
                except _Again:
                    break
                if sub_monitor is not None:  # a renewed SUB connection is known before an end
                    for up in self._events(sub_monitor):
                        core.on_sub(link, up, now, wall)
                core.on_reply(link, frames, now, wall)
        core.tick(now, wall)
        outbox = core.outbox
        while outbox:
            kind, link, payload = outbox.popleft()
            sub = self.subs[link.index]
            if kind == "request":
                try:
                    self.dealers[link.index].send(payload, _NOBLOCK)
                except _Again:
                    core.sent_failed(link, now, wall)
            elif sub is not None:
                sub.setsockopt(zmq.SUBSCRIBE if kind == "subscribe" else zmq.UNSUBSCRIBE, payload)

    @staticmethod
    def _events(monitor: zmq.Socket[bytes] | None) -> list[bool]:
        """The connection events waiting on ``monitor``: True up, False down."""
        events: list[bool] = []
        while monitor is not None:
            try:
                event = parse_monitor_message(monitor.recv_multipart(_NOBLOCK))
            except _Again:
                break
            except (ValueError, zmq.ZMQError):
                continue
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                events.append(True)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                events.append(False)
        return events

    def close(self) -> None:
        for sock in self.owned[::2]:  # each socket is followed by its monitor
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
        for sock in self.owned:
            sock.close(linger=0)
