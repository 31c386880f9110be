"""Schema enforcement in a real busd: reload under load over SIGHUP and the control socket,
spoken with raw protocol peers (tests/rawproto.py)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import BusdProcess, TrackedContext
from rawproto import collect, dealer, envelope, publish, subscriber, wait_subscribed

from busd_client.control import ControlClient, ControlError

TOTAL = 20_000
V2 = {
    "slug": "https://apps.example/shop/releases/42",
    "cmd": "bin/web",
    "env": {"RACK_ENV": "production"},
    "flag": "extra_cpu",
}


def require_schema_commands(busd: BusdProcess) -> ControlClient:
    """A control client that has seen busd serve ``schemas.list``."""
    client = ControlClient(busd.control)
    client.call("schemas.list")
    return client


def add_release_v3(directory: Path) -> None:
    v3 = json.loads((directory / "release" / "v2.json").read_text())
    v3["properties"]["region"] = {"type": "string"}
    (directory / "release" / "v3.json").write_text(json.dumps(v3))
    meta = json.loads((directory / "release" / "meta.json").read_text())
    meta["versions"]["3"] = "active"
    (directory / "release" / "meta.json").write_text(json.dumps(meta))


def message(seq: int) -> dict[str, Any]:
    """Every third message claims v3 (unknown until the reload), every seventh is a v1 claim
    carrying v2's flag (always invalid), the rest are valid v2."""
    if seq % 7 == 0:
        return envelope("release.load", id=f"m{seq}", version=1, data=V2)
    if seq % 3 == 0:
        return envelope("release.load", id=f"m{seq}", version=3, data={**V2, "region": "eu"})
    return envelope("release.load", id=f"m{seq}", version=2, data=V2)


@pytest.mark.timeout(90)
def test_reload_under_load_loses_and_misjudges_nothing(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """20,000 messages stream while release v3 is added (SIGHUP) and a broken file is
    dropped in (refused over the control socket): every message is answered once; v2 always
    passes, the invalid v1 claims always fail, v3 switches once from unknown_version to
    accepted and never back; subscribers get exactly the accepted messages."""
    control = require_schema_commands(busd)
    sub = subscriber(zctx, busd.sub_endpoint, "release.load")
    wait_subscribed(zctx, busd.pub_endpoint, sub, "release.load")
    received = [0]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or sub.poll(200):
            if sub.poll(50):
                topic = sub.recv_multipart()[0]
                received[0] += topic == b"release.load"

    reader = threading.Thread(target=drain)
    reader.start()
    pub = dealer(zctx, busd.pub_endpoint)
    try:
        half = TOTAL // 2
        for seq in range(1, half + 1):
            publish(pub, seq, "release.load", message(seq))
            if seq == half // 2:
                add_release_v3(busd.schemas_dir)
                busd.signal(signal.SIGHUP)
        first = collect(pub, half, timeout=40)
        busd.wait_log("schemas reloaded", timeout=10)
        broken = busd.schemas_dir / "instance-state" / "v2.json"
        broken.write_text('{"type": "object", "properties": ')
        for seq in range(half + 1, TOTAL + 1):
            publish(pub, seq, "release.load", message(seq))
            if seq == half + half // 2:
                with pytest.raises(ControlError) as refused:
                    control.call("schemas.reload")
                assert refused.value.code == "schemas_refused"
                assert "instance-state/v2.json: invalid JSON" in refused.value.message
        fates = {**first, **collect(pub, TOTAL - half, timeout=40)}
    finally:
        pub.close()
        control.close()
        stop.set()
        reader.join(20)
        sub.close()
    assert sorted(fates) == list(range(1, TOTAL + 1))
    switched = False
    for seq in range(1, TOTAL + 1):
        code = fates[seq]["code"]
        if seq % 7 == 0:
            assert code == "invalid", (seq, fates[seq])
        elif seq % 3 == 0:
            if code == "accepted":
                switched = True
            else:
                assert not switched and code == "unknown_version", (seq, fates[seq])
        else:
            assert code == "accepted", (seq, fates[seq])
    assert switched and fates[3]["code"] == "unknown_version"
    assert busd.wait_log("schemas reload refused; the previous set keeps serving")
    accepted = sum(1 for f in fates.values() if f["code"] == "accepted")
    assert received[0] == accepted
