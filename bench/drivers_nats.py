"""nats-py publisher and subscriber (core NATS, no JetStream), as an asyncio program would
use them: ``publish`` per message (nats-py buffers and flushes in its own task), a
subscription callback per message, ``flush`` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from bench import message
from bench.worker import Control, Spec, Tally, idle_done, run_async_publisher


async def _connect(url: str) -> Any:
    import nats

    return await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5
    )


class NatsPub:
    def __init__(self, nc: Any, spec: Spec) -> None:
        self.nc = nc
        self.env = message.Envelopes(data=message.payload(spec.get("payload")))
        self.topics = message.topics(spec.get("topics", 1))
        self.warm = message.warmup_topic(spec["index"])

    async def warmup(self) -> None:
        await self.nc.publish(self.warm, self.env.encode(self.warm))
        await self.nc.flush()

    async def begin(self) -> None:
        pass

    async def send(self, start: int, n: int) -> None:
        publish, encode, topics = self.nc.publish, self.env.encode, self.topics
        nt = len(topics)
        for i in range(start, start + n):
            topic = topics[i % nt]
            await publish(topic, encode(topic))

    async def finish(self) -> dict[str, Any]:
        await self.nc.flush(timeout=30)
        return {}

    async def close(self) -> None:
        await self.nc.close()


async def _publish(spec: Spec, control: Control) -> None:
    nc = await _connect(spec["endpoint"])
    await run_async_publisher(NatsPub(nc, spec), spec, control)


async def _subscribe(spec: Spec, control: Control) -> None:
    nc = await _connect(spec["endpoints"][0])
    many = spec.get("topics", 1) > 1
    measured = message.MANY_PREFIX if many else message.TOPIC
    waiting = {message.warmup_topic(i) for i in range(spec["publishers"])}
    tally = Tally()
    latency = bool(spec.get("latency"))
    samples = tally.latencies
    clock, now_ns, stamp = time.monotonic_ns, time.time_ns, message.stamp
    ready = asyncio.Event()

    async def on_warmup(msg: Any) -> None:
        waiting.discard(msg.subject)
        if not waiting:
            ready.set()

    async def on_message(msg: Any) -> None:
        t = clock()
        if not tally.first:
            tally.first = t
        tally.last = t
        tally.received += 1
        if latency:
            samples.append(now_ns() - stamp(msg.data))

    await nc.subscribe(message.WARMUP_PREFIX + "*", cb=on_warmup)
    await nc.subscribe(measured + "*" if many else measured, cb=on_message)
    await nc.flush()
    deadline = time.monotonic() + spec.get("deadline", 60.0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ready.wait(), timeout=spec.get("deadline", 60.0))
    control.say("ready")
    idle = spec.get("idle", 0.3)
    while True:  # the messages arrive in callbacks; this only watches for the end
        await asyncio.sleep(0.05)
        if idle_done(control, tally, idle, deadline):
            break
    result = tally.result()
    result["slow_consumer"] = bool(nc.last_error and "slow" in str(nc.last_error).lower())
    control.say(json.dumps(result))
    await asyncio.to_thread(control.exit.wait, 120)
    await nc.close()


def run(spec: Spec, control: Control) -> Any:
    if spec["driver"] == "nats-sub":
        return _subscribe(spec, control)
    return _publish(spec, control)
