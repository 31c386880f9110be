"""A publisher that never reads its replies is bounded: once reply_hwm of them are queued
further replies are dropped (counted), and if it goes on sending its connection is closed;
a canary beside it loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from conftest import BusdProcess, wait_for
from hostile import Canary, RawPeer, frames, rss_kib
from rawproto import header

from busd_client.control import ControlClient

BAD = msgpack.packb({"data": "x" * 40})  # refused bad_envelope, with a reason, every time


def broker_stats(busd: BusdProcess) -> dict[str, Any]:
    with ControlClient(busd.control) as control:
        stats: dict[str, Any] = control.call("stats")["stats"]["broker"]
    return stats


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_a_publisher_that_sends_on_but_never_reads_replies_is_cut_at_reply_hwm(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(extra_args=("--reply-hwm", "200"))
    assert busd.proc is not None
    pid = busd.proc.pid
    canary = Canary(busd.pub_endpoint, busd.sub_endpoint).start()
    before = rss_kib(pid)
    # A raw ZMTP peer never reads its socket: busd's replies fill the kernel buffers, then
    # reply_hwm frames in libzmq; the next message it sends gets its connection closed.
    deaf = RawPeer(busd.pub_port)
    blob = b"".join(frames([header(seq), b"release.shop", BAD]) for seq in range(1, 20_001))
    peaks = [before]
    try:
        for _ in range(10):
            try:
                deaf.sendall(blob)
            except OSError:
                break  # closed by busd
            peaks.append(rss_kib(pid))
            if broker_stats(busd)["publishers_cut"]:
                break
        stats = broker_stats(busd)
        assert stats["publishers_cut"] == 1, stats
        assert stats["replies_dropped"] >= 1 and stats["rejected"]["bad_envelope"] >= 200
        assert max(peaks) < before + 32 * 1024, f"RSS {before} -> {max(peaks)} KiB"
    finally:
        deaf.close()
    wait_for(lambda: rss_kib(pid) < before + 16 * 1024, timeout=10, what="RSS back")
    canary.stop()
    assert canary.lost() == [], canary.summary()
    assert canary.p99() < 0.050, canary.summary()
    print("canary", canary.summary(), "RSS KiB", before, "peak", max(peaks))
