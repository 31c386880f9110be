"""Connections that are not ZMTP 3 peers are closed within the handshake deadline (the ZMTP
1.0 fallback is refused), silent peers are closed by heartbeats, and the memory a silent
half-sent message held is returned; a canary beside them loses nothing.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Callable

import pytest
from conftest import BusdProcess, wait_for
from hostile import Canary, RawPeer, frame, rss_kib

from busd_client.control import ControlClient

# What a non-ZeroMQ client sends first: one byte, an HTTP request, ZMTP 1.0's identity frame
# (the two bytes that used to subscribe to everything), random bytes, nothing at all.
OPENINGS = (b"G", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"\x01\x00", b"", None)
PER_PORT = 1000


def _opening(i: int) -> bytes:
    first = OPENINGS[i % len(OPENINGS)]
    return os.urandom(32) if first is None else first


def wait_all_closed(socks: list[socket.socket], timeout: float) -> bytes:
    """Wait until busd has closed every socket; return whatever busd sent on them."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    got = b""
    open_ = len(socks)
    deadline = time.monotonic() + timeout
    while open_:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{open_} of {len(socks)} connections still open")
        for key, _ in sel.select(left):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                got += data
                continue
            sel.unregister(s)
            open_ -= 1
    sel.close()
    return got


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_a_thousand_garbage_connections_per_port_are_closed_within_the_handshake_deadline(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(extra_args=("--handshake-timeout", "2"))
    canary = Canary(busd.pub_endpoint, busd.sub_endpoint).start()
    socks: list[socket.socket] = []
    try:
        started = time.monotonic()
        for port in (busd.pub_port, busd.sub_port):
            for i in range(PER_PORT):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                if data := _opening(i):
                    s.sendall(data)
                socks.append(s)
        # The handshake deadline is 2 s; connecting 2,000 sockets takes a while itself.
        got = wait_all_closed(socks, timeout=2 + (time.monotonic() - started) + 8)
        # busd's own greeting (10 signature bytes + version...) at most: never a message.
        assert b"release." not in got
        with ControlClient(busd.control) as control:
            stats = control.call("stats")["stats"]
        for role in ("ingress", "egress"):
            assert stats[role]["handshake_failures"] >= PER_PORT, stats[role]
            assert stats[role]["connected"] <= 2, stats[role]  # the canary's own
    finally:
        for s in socks:
            s.close()
        canary.stop()
    assert canary.lost() == [], canary.summary()
    assert canary.p99() < 0.050, canary.summary()


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_a_silent_peer_with_a_half_sent_message_is_closed_by_heartbeats_and_its_memory_returned(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(extra_args=("--heartbeat-interval", "0.5", "--heartbeat-timeout", "1.5"))
    assert busd.proc is not None
    pid = busd.proc.pid
    canary = Canary(busd.pub_endpoint, busd.sub_endpoint).start()
    try:
        before = rss_kib(pid)
        peer = RawPeer(busd.pub_port)
        chunk = frame(b"z" * (1024 * 1024 - 64), more=True)
        # 64 MiB of a message whose last frame never comes, paced: libzmq decodes every
        # connection on one I/O thread, and a flat-out 1 GiB/s stream delays the canary.
        for _ in range(64):
            peer.sendall(chunk)
            time.sleep(0.005)
        wait_for(lambda: rss_kib(pid) > before + 48 * 1024, timeout=10, what="busd to buffer")
        # The peer answers no PING: libzmq closes it after heartbeat_timeout.
        with pytest.raises(ConnectionError):
            peer.recv_message(timeout=15)
        peer.close()
        wait_for(lambda: rss_kib(pid) < before + 32 * 1024, timeout=10, what="RSS back")
    finally:
        canary.stop()
    assert canary.lost() == [], canary.summary()
    assert canary.p99() < 0.050, canary.summary()
