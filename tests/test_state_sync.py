"""Snapshot then live with no race (docs/protocol.md §3.2): a raw client that follows the
client rule, started while a publisher runs at full speed, ends with exactly the publisher's
final map, no update lost and none applied twice."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
import zmq
from conftest import BusdProcess, wait_for
from stateclient import RawStateView, request

from busd_client import Publisher
from busd_protocol.messages import decode_envelope
from busd_protocol.snapshots import End

pytestmark = pytest.mark.timeout(120)

KEYS = 20_000
UPDATES = 40_000
APPS = 40


def json_key(envelope: bytes) -> str:
    env = decode_envelope(envelope)
    assert type(env) is dict
    return str(env["id"])


@pytest.mark.parametrize("live_first", [False, True], ids=["request-at-once", "live-first"])
def test_a_snapshot_synced_mid_stream_converges_to_the_publishers_final_map(
    busd_factory: Callable[..., BusdProcess],
    zctx: zmq.Context[zmq.Socket[bytes]],
    live_first: bool,
) -> None:
    """The request may reach busd before its sync token (parked until it is seen) or after
    (live messages already flow to the client: those at or below the cut's positions are
    dropped); either way the view ends equal to the publisher's map."""
    b = busd_factory(extra_args=("--sub-hwm", "1000000"))
    expected: dict[tuple[str, str], str] = {}  # (app, instance_id) -> the last accepted id
    midway, finished = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def publish() -> None:
        rng = random.Random(14)
        try:
            with Publisher(b.pub_endpoint, name="reporter", timeout=60) as pub:
                for i in range(UPDATES):
                    k = i if i < KEYS else rng.randrange(KEYS)
                    app, instance = f"app{k % APPS}", str(k)
                    st = "down" if i >= KEYS and i % 13 == 0 else "up"
                    data = {
                        "app": app,
                        "instance_id": instance,
                        "state": st,
                        "host": "h1.example",
                        "version": str(i),
                        "reported_at": i,
                    }
                    receipt = pub.publish(f"instance.{app}", "instance-state", 1, data)
                    if st == "down":
                        expected.pop((app, instance), None)
                    else:
                        expected[(app, instance)] = receipt.id
                    if i == KEYS + 5000:
                        midway.set()
                outcome["failures"] = pub.flush()
        finally:
            midway.set()
            finished.set()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    assert midway.wait(60)
    view = RawStateView(zctx, b.sub_endpoint, b.state_endpoint, "instance.")
    try:
        end = view.start(live_first=live_first)
        assert not finished.is_set() or outcome, "the publisher ended before the cut"
        assert end.entries > 0
        assert end.rules["instance-state"].key == ("app", "instance_id")

        def converged() -> bool:
            view.pump()
            if not finished.is_set():
                return False
            got = {k[1]: env["id"] for k, env in view.view.items()}
            return got == {(a, i): id_ for (a, i), id_ in expected.items()}

        wait_for(converged, 60, interval=0, what="the view to reach the publisher's final map")
        publisher.join(10)
        assert outcome["failures"] == []
        # Key by key, the same message (not just the same keys).
        for (app, instance), id_ in expected.items():
            assert view.view[("instance-state", (app, instance))]["id"] == id_
        assert len(view.view) == len(expected)
        assert len(view.applied) == len(set(view.applied)), "an update applied twice"
        assert view.live_applied > 0
        if live_first:
            assert view.dropped >= 100  # received live before the cut: in the snapshot
        # A narrow prefix: busd scans the cut in slices and sends only what is under it.
        parts, narrow = request(zctx, b.state_endpoint, "instance.app7")
        assert isinstance(narrow, End) and set(narrow.topics) == {"instance.app7"}
        got = {json_key(e.envelope): e.topic for p in parts for e in p.entries}
        assert got == {id_: "instance.app7" for (a, _), id_ in expected.items() if a == "app7"}
    finally:
        view.close()
