"""The Ruby client and the Python client through one real busd, both ways: what one
publishes the other receives, field for field, in order."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from typing import Any

import pytest
import rubyproc
from conftest import BusdProcess

from busd_client import Publisher, Subscriber

_MISSING = rubyproc.missing()
pytestmark = pytest.mark.skipif(
    _MISSING is not None, reason=f"Ruby client tests skipped: {_MISSING}"
)

DATA = {
    "slug": "https://apps.example/shop/releases/42",
    "cmd": "bin/web --name=café ☕",
    "env": {"RACK_ENV": "production", "GREETING": "grüß dich"},
}


def _probe_until(sub: Subscriber, pub: Publisher, topic: str, timeout: float = 10.0) -> None:
    """The slow joiner: publish probes until the subscriber has one, then drain."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish_wait(topic, "release", 2, DATA)
        if sub.recv(timeout=0.05) is not None:
            while sub.recv(timeout=0.05) is not None:
                pass
            return
    raise AssertionError("the Python subscription never took effect")


@pytest.mark.timeout(180)
def test_ten_thousand_messages_from_ruby_reach_a_python_subscriber_in_order(
    busd: BusdProcess,
) -> None:
    """10,000 pipelined messages published by Busd::Publisher arrive at busd_client's
    Subscriber in publish order, each with the envelope Ruby wrote."""
    count = 10_000
    with (
        Subscriber(busd.sub_endpoint, "release.interop", rcvhwm=0) as sub,
        Publisher(busd.pub_endpoint, name="py-probe") as probe,
    ):
        _probe_until(sub, probe, "release.interop.probe")
        spec = {
            "endpoint": busd.pub_endpoint,
            "topic": "release.interop.rb",
            "count": count,
            "name": "ruby-interop",
            "data": DATA,
        }
        with rubyproc.script("publish", spec, stdout=subprocess.PIPE) as proc:
            got = []
            deadline = time.monotonic() + 120
            while len(got) < count and time.monotonic() < deadline:
                message = sub.recv(timeout=1.0)
                if message is not None and message.topic == "release.interop.rb":
                    got.append(message)
            out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert sub.bad_messages == 0
    result = json.loads(out)
    assert result["accepted"] == count and result["failures"] == []
    assert [m.id for m in got] == result["ids"]
    assert [m.data["flag"] for m in got] == [str(i) for i in range(count)]
    first = got[0]
    assert (first.schema, first.version, first.publisher) == ("release", 2, "ruby-interop")
    assert {k: first.data[k] for k in DATA} == DATA
    assert abs(first.ts - time.time_ns()) < 600 * 10**9


@pytest.mark.timeout(120)
def test_messages_from_python_reach_a_ruby_subscriber_field_for_field(busd: BusdProcess) -> None:
    """busd_client.Publisher publishes, Busd::Subscriber decodes: ids, timestamps,
    publisher and payloads (non-ASCII text included) come out as they went in."""
    count = 500
    spec = {
        "endpoint": busd.sub_endpoint,
        "prefixes": ["release.interop"],
        "topic": "release.interop.py",
        "count": count,
        "idle": 20.0,
    }
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    with (
        rubyproc.script("subscribe", spec, stdout=subprocess.PIPE) as proc,
        Publisher(busd.pub_endpoint, name="py-interop") as pub,
    ):
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(
            target=lambda: [lines.put(json.loads(line)) for line in stdout], daemon=True
        )
        reader.start()
        deadline = time.monotonic() + 20
        while lines.empty():  # the slow joiner, on the Ruby side
            assert time.monotonic() < deadline, "the Ruby subscription never took effect"
            pub.publish_wait("release.interop.probe", "release", 2, DATA)
            time.sleep(0.02)
        receipts = [
            pub.publish("release.interop.py", "release", 2, {**DATA, "flag": f"n{i}"})
            for i in range(count)
        ]
        assert pub.flush() == []
        received = []
        while True:
            line = lines.get(timeout=30)
            if "done" in line:
                break
            if line["topic"] == "release.interop.py":
                received.append(line)
        assert proc.wait(30) == 0
    assert line == {"done": count, "bad_messages": 0}
    assert [m["id"] for m in received] == [r.id for r in receipts]
    assert [m["data"] for m in received] == [{**DATA, "flag": f"n{i}"} for i in range(count)]
    assert {(m["schema"], m["version"], m["publisher"]) for m in received} == {
        ("release", 2, "py-interop")
    }
    assert all(isinstance(m["ts"], int) and m["ts"] > 0 for m in received)
