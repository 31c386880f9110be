"""Held control connections cannot lock the operator out: a new connection makes room by
closing the one idle the longest; a canary beside them loses nothing."""

from __future__ import annotations

import socket

import pytest
from conftest import BusdProcess
from hostile import Canary

from busd_client.control import ControlClient

HELD = 40  # over the control socket's cap of 32


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_forty_held_control_connections_do_not_lock_the_operator_out(busd: BusdProcess) -> None:
    canary = Canary(busd.pub_endpoint, busd.sub_endpoint).start()
    held: list[socket.socket] = []
    try:
        for _ in range(HELD):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(busd.control)
            held.append(s)
        # Each of these is a new connection past the cap: it gets in and is answered.
        for _ in range(5):
            with ControlClient(busd.control, timeout=5.0) as operator:
                stats = operator.call("stats")["stats"]
        control = stats["control"]
        assert control["control_connections_evicted_total"] >= HELD - 32
        assert control["control_connections_refused_total"] == 0
    finally:
        for s in held:
            s.close()
    canary.stop()
    assert canary.lost() == [], canary.summary()
    assert canary.p99() < 0.050, canary.summary()
