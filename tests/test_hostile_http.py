"""Silent connections cannot keep /healthz from answering: at the connection cap the oldest
connection without a request makes room; a canary beside them loses nothing."""

from __future__ import annotations

import socket
import time

import pytest
from conftest import BusdProcess, wait_for
from hostile import Canary
from opshttp import get, scrape, value

SILENT = 70  # over the metrics port's cap of 64


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_seventy_silent_connections_do_not_keep_healthz_from_answering(busd: BusdProcess) -> None:
    canary = Canary(busd.pub_endpoint, busd.sub_endpoint).start()
    host, _, port = busd.metrics.rpartition(":")
    silent: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        answered = 0
        # Hold the port with silent connections, renewed as busd closes them, and ask
        # /healthz between renewals, for longer than one 5 s request deadline.
        while time.monotonic() < deadline - 13 or answered < 20:
            assert time.monotonic() < deadline, f"{answered} answers"
            silent = [s for s in silent if s.fileno() != -1 and _open(s)]
            while len(silent) < SILENT:
                silent.append(socket.create_connection((host, int(port)), timeout=5))
            status, _, body = get(busd.metrics, "/healthz", timeout=2.0)
            assert (status, body) == (200, b"ok\n")
            answered += 1
            time.sleep(0.2)
        evicted = value(scrape(busd.metrics), "busd_http_connections_evicted_total")
        assert evicted is not None and evicted >= SILENT - 64
    finally:
        for s in silent:
            s.close()
    wait_for(lambda: canary.sent, what="the canary to publish")
    canary.stop()
    assert canary.lost() == [], canary.summary()
    assert canary.p99() < 0.050, canary.summary()


def _open(sock: socket.socket) -> bool:
    """False once busd has closed it (EOF or reset), without blocking."""
    sock.setblocking(False)
    try:
        if sock.recv(1) != b"":
            return True
    except BlockingIOError:
        sock.setblocking(True)
        return True
    except OSError:
        pass
    sock.close()
    return False
