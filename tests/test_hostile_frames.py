"""A message of millions of frames is discarded in slices: the event loop keeps answering
/healthz and feeding the watchdog, the sender gets ``bad_frame``, a canary loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgpack
import pytest
from conftest import BusdProcess, wait_for
from hostile import Canary, RawPeer, frame, publish_parts, rss_kib, watchdog
from opshttp import get

from busd_client.control import ControlClient

FRAMES = 4_000_000
MAX_BATCH = 1000  # busd's default max_batch


def overlong_message(seq: int, frames: int) -> bytes:
    """A publish's three frames followed by ``frames - 3`` empty ones, as ZMTP bytes."""
    head, topic, env = publish_parts(seq)
    return (
        frame(head, True)
        + frame(topic, True)
        + frame(env, True)
        + b"\x01\x00" * (frames - 4)
        + b"\x00\x00"
    )


@pytest.mark.timeout(60)
def test_four_million_frames_are_discarded_in_slices_while_health_and_watchdog_go_on(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    with watchdog() as wd:
        busd = busd_factory(start=False)
        busd.env = {"NOTIFY_SOCKET": wd.path, "WATCHDOG_USEC": "1000000"}
        busd.start()
        assert busd.proc is not None
        canary = Canary(busd.pub_endpoint, busd.sub_endpoint).start()
        control = ControlClient(busd.control, timeout=5.0)
        rss_before = rss_kib(busd.proc.pid)
        attacker = RawPeer(busd.pub_port)
        started = time.monotonic()
        attacker.sendall(overlong_message(7, FRAMES))

        # While busd discards, the loop answers /healthz and the control socket.
        def discarding() -> int:
            broker = control.call("stats")["stats"]["broker"]
            return int(broker["overlong_messages"])

        wait_for(discarding, timeout=20, what="the discard to start")
        answered = 0
        while control.call("stats")["stats"]["broker"]["rejected"]["bad_frame"] == 0:
            status, _, body = get(busd.metrics, "/healthz", timeout=5.0)
            assert (status, body) == (200, b"ok\n")
            answered += 1
            assert time.monotonic() - started < 40, "discard never ended"
        assert answered >= 1

        [raw] = attacker.recv_message(timeout=10)
        reply = msgpack.unpackb(raw)
        assert reply["acc"] == []
        # Every seq the publish could have meant (max_batch of them) is bad_frame.
        assert [(r["seq"], r["code"]) for r in reply["rej"]] == [
            (seq, "bad_frame") for seq in range(7, 7 + MAX_BATCH)
        ]
        assert reply["rej"][0]["reason"] == (
            f"a batch holds at most {MAX_BATCH} messages ({1 + 2 * MAX_BATCH} frames), "
            f"got {FRAMES} frames"
        )
        broker = control.call("stats")["stats"]["broker"]
        assert broker["frames_discarded"] == FRAMES - 1 - 2 * MAX_BATCH
        assert broker["overlong_messages"] == 1
        # systemd kills a service whose pings stop for WATCHDOG_USEC (1 s here).
        assert wd.max_gap(started) < 1.0, f"watchdog gap {wd.max_gap(started):.2f} s"
        attacker.close()
        control.close()
        canary.stop()
        assert canary.lost() == [], canary.summary()
        assert canary.delivered, canary.summary()
        # The discarded frames' memory goes back to the system (malloc_trim after a discard).
        pid = busd.proc.pid
        wait_for(lambda: rss_kib(pid) < rss_before + 64 * 1024, timeout=10, what="RSS back")
        print("canary", canary.summary(), "RSS KiB", rss_before, "->", rss_kib(pid))
