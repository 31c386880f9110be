"""redis-py (with hiredis when installed) publisher and subscriber on Redis pub/sub.

The publisher pipelines (``transaction=False``) whatever is due at once, so flat-out sends
batches of 100 PUBLISH commands per round trip while a paced 5,000 msg/s sends one at a
time; without pipelining each PUBLISH would wait for its reply. The subscriber reads with
``get_message``, redis-py's ordinary loop.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench import message
from bench.worker import Control, Spec, Tally, idle_done, run_sync_publisher


def _client(endpoint: str) -> Any:
    import redis

    host, _, port = endpoint.rpartition(":")
    return redis.Redis(host=host, port=int(port), socket_timeout=30)


class RedisPub:
    def __init__(self, spec: Spec) -> None:
        self.r = _client(spec["endpoint"])
        self.pipe = self.r.pipeline(transaction=False)
        self.env = message.Envelopes(data=message.payload(spec.get("payload")))
        self.topics = message.topics(spec.get("topics", 1))
        self.warm = message.warmup_topic(spec["index"])

    def warmup(self) -> None:
        self.r.publish(self.warm, self.env.encode(self.warm))

    def begin(self) -> None:
        pass

    def send(self, start: int, n: int) -> None:
        encode, topics = self.env.encode, self.topics
        nt = len(topics)
        if n == 1:
            topic = topics[start % nt]
            self.r.publish(topic, encode(topic))
            return
        pipe = self.pipe
        publish = pipe.publish
        for i in range(start, start + n):
            topic = topics[i % nt]
            publish(topic, encode(topic))
        pipe.execute()

    def finish(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.r.close()


def run_sub(spec: Spec, control: Control) -> None:
    r = _client(spec["endpoints"][0])
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    many = spec.get("topics", 1) > 1
    measured = (message.MANY_PREFIX if many else message.TOPIC).encode()
    warm = [message.warmup_topic(i) for i in range(spec["publishers"])]
    waiting = {w.encode() for w in warm}
    if many:
        pubsub.psubscribe(message.MANY_PREFIX + "*")
    else:
        pubsub.subscribe(message.TOPIC)
    pubsub.subscribe(*warm)
    deadline = time.monotonic() + spec.get("deadline", 60.0)
    get = pubsub.get_message
    while waiting and time.monotonic() < deadline:
        m = get(timeout=0.1)
        if m is not None:
            waiting.discard(m["channel"])
    control.say("ready")
    tally = Tally()
    latency = bool(spec.get("latency"))
    samples = tally.latencies
    idle = spec.get("idle", 0.3)
    clock, now_ns, stamp = time.monotonic_ns, time.time_ns, message.stamp
    while True:
        m = get(timeout=0.05)
        if m is None:
            if idle_done(control, tally, idle, deadline):
                break
            continue
        if m["channel"].startswith(measured):
            t = clock()
            if not tally.first:
                tally.first = t
            tally.last = t
            tally.received += 1
            if latency:
                samples.append(now_ns() - stamp(m["data"]))
    control.say(json.dumps(tally.result()))
    control.exit.wait(30)
    pubsub.close()
    r.close()


def run(spec: Spec, control: Control) -> None:
    if spec["driver"] == "redis-sub":
        run_sub(spec, control)
        return
    run_sync_publisher(RedisPub(spec), spec, control)
