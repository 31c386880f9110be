"""One publisher or subscriber process of the ``pool`` workload:
``python -m bench.pool_worker '<json spec>'``.

The line protocol is bench.worker's (``ready``, ``go``, ``stop``, ``exit``, one JSON result
line) but both roles say ``ready``, and readiness is proved per broker, because a pool
client talks to several brokers:

- a publisher is ready once every broker of its pool accepted one of its warm-up messages
  (so every connection is up before the measured phase);
- a subscriber is ready once it received, through its own subscription, a probe it sent
  itself through each broker (so its subscription reached every broker: ZeroMQ's slow
  joiner, per broker).

Each process owns its sockets, from its main thread; the stdin reader thread touches none.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import zmq

from bench import message
from bench.worker import Control, Spec, Tally, idle_done, send_paced

FINISH_TIMEOUT = 30.0  # seconds a publisher may take to settle its last messages
READY_DEADLINE = 20.0  # seconds a worker may take to prove its connections
PROBE_INTERVAL = 0.02  # seconds between warm-up messages / subscription probes


def _client_of(spec: Spec, ctx: zmq.Context[Any]) -> Any:
    """The publisher the spec names: busd_client.Publisher to the first endpoint, or a
    PoolPublisher to all of them."""
    from busd_client import PoolPublisher, Publisher

    endpoints = spec["pub_endpoints"]
    if spec["client"] == "plain":
        return Publisher(
            endpoints[0],
            name=message.PUBLISHER,
            window=spec["window"],
            timeout=FINISH_TIMEOUT,
            context=ctx,
        )
    return PoolPublisher(
        endpoints,
        name=message.PUBLISHER,
        window=spec["window"],
        timeout=FINISH_TIMEOUT,
        context=ctx,
    )


def _warm_publisher(pub: Any, spec: Spec, control: Control) -> None:
    """Publish warm-up messages until every broker accepted one (the plain Publisher: its
    one broker). Keeps going, slowly, until ``go``."""
    topic = message.warmup_topic(spec.get("index", 0))
    deadline = time.monotonic() + READY_DEADLINE
    ready = False
    while not control.go.is_set():
        pub.publish(topic, message.SCHEMA, message.VERSION, message.DATA)
        pub.flush(FINISH_TIMEOUT)
        if not ready:
            brokers = getattr(pub, "brokers", None)
            ready = brokers is None or all(b["accepted"] > 0 for b in brokers)
            if ready:
                control.say("ready")
            elif time.monotonic() > deadline:
                raise SystemExit(
                    f"publisher: brokers not all accepting after {READY_DEADLINE:g} s: {brokers}"
                )
        control.go.wait(PROBE_INTERVAL)


def run_publisher(spec: Spec, control: Control) -> None:
    """Flat out (``rate`` None) or paced, for ``duration`` s or ``count`` messages; then
    flush. Reports sent, failures, the send window and the settled window (after flush)."""
    ctx: zmq.Context[Any] = zmq.Context()
    pub = _client_of(spec, ctx)
    _warm_publisher(pub, spec, control)
    pub.flush(FINISH_TIMEOUT)  # warm-up fates are not part of the measurement
    statistics = getattr(pub, "statistics", None)  # PoolPublisher only
    before = statistics() if statistics is not None else {}
    publish, topic, data = pub.publish, message.TOPIC, message.DATA
    schema, version = message.SCHEMA, message.VERSION

    def send(_sent: int, n: int) -> None:
        for _ in range(n):
            publish(topic, schema, version, data)

    sent, t0, t_end, cpu0 = send_paced(spec, send)
    failures = pub.flush(FINISH_TIMEOUT)
    t_settled = time.monotonic_ns()
    cpu = time.process_time() - cpu0
    failed: dict[str, int] = {}
    for err in failures:
        key = str(getattr(err, "code", None) or type(err).__name__)
        failed[key] = failed.get(key, 0) + 1
    result: dict[str, Any] = {
        "sent": sent,
        "accepted": sent - len(failures),
        "failed": failed,
        "t_start": t0,
        "t_end": t_end,
        "t_settled": t_settled,
        "cpu_s": cpu,
    }
    if statistics is not None:
        after = statistics()
        result["resent"] = after["resent"] - before["resent"]
        result["late_accepts"] = after["late_accepts"] - before["late_accepts"]
        result["brokers"] = after["brokers"]
        result["brokers_before"] = before["brokers"]  # the warm-up's share, to subtract
    control.say(json.dumps(result))
    control.exit.wait(120)
    pub.close(timeout=0.5)
    ctx.term()


def _confirm_subscriptions(sub: Any, spec: Spec, ctx: zmq.Context[Any]) -> None:
    """Send a probe through each broker (a Publisher per broker, owned here) until the
    subscriber received every one: its subscription is then in place at every broker."""
    from busd_client import Publisher

    tag = f"{message.WARMUP_PREFIX}s{os.getpid()}."
    wanted = {f"{tag}{k}": ep for k, ep in enumerate(spec["pub_endpoints"])}
    probes = {
        ep: Publisher(ep, name=message.PUBLISHER, timeout=5.0, context=ctx)
        for ep in spec["pub_endpoints"]
    }
    deadline = time.monotonic() + READY_DEADLINE
    try:
        while wanted:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"subscriber: no probe back through {sorted(wanted.values())}"
                    f" after {READY_DEADLINE:g} s"
                )
            for topic, ep in wanted.items():
                probes[ep].publish(topic, message.SCHEMA, message.VERSION, message.DATA)
            until = time.monotonic() + PROBE_INTERVAL
            while (left := until - time.monotonic()) > 0:
                got = sub.recv(timeout=left)
                if got is not None:
                    wanted.pop(got.topic, None)
    finally:
        for p in probes.values():
            p.close(timeout=1.0)


def run_subscriber(spec: Spec, control: Control) -> None:
    """busd_client.Subscriber on the first endpoint, or a PoolSubscriber on all; counts the
    measured topic, optionally records every arrival (monotonic ns) and latency (ns)."""
    from busd_client import PoolSubscriber, Subscriber

    ctx: zmq.Context[Any] = zmq.Context()
    prefixes = [message.TOPIC, message.WARMUP_PREFIX]
    endpoints = spec["sub_endpoints"]
    sub: Any = (
        Subscriber(endpoints[0], prefixes, context=ctx)
        if spec["client"] == "plain"
        else PoolSubscriber(endpoints, prefixes, context=ctx)
    )
    _confirm_subscriptions(sub, spec, ctx)
    control.say("ready")
    tally = Tally()
    record = bool(spec.get("record"))
    arrivals: list[int] = []
    latencies: list[int] = []
    idle = spec.get("idle", 0.3)
    deadline = time.monotonic() + spec.get("deadline", 120.0)
    recv, clock, now_ns, measured = sub.recv, time.monotonic_ns, time.time_ns, message.TOPIC
    cpu0, loop0 = time.process_time(), time.thread_time()
    while True:
        got = recv(0.05)  # the loop an application with a stop condition would write
        if got is None:
            if idle_done(control, tally, idle, deadline):
                break
            continue
        if got.topic != measured:
            continue
        at = clock()
        if not tally.first:
            tally.first = at
        tally.last = at
        tally.received += 1
        if record:
            arrivals.append(at)
            latencies.append(now_ns() - got.ts)
    cpu, loop = time.process_time() - cpu0, time.thread_time() - loop0
    # cpu_s: the process (libzmq's I/O thread too); loop_cpu_s: this thread, the loop alone
    result: dict[str, Any] = {
        **tally.result(),
        "cpu_s": cpu,
        "loop_cpu_s": loop,
        "duplicates": getattr(sub, "duplicates", 0),
        "bad_messages": sub.bad_messages,
    }
    dedup = getattr(sub, "dedup", None)
    if dedup is not None:
        result["dedup"] = dedup.statistics()
    if record:
        result["arrivals_ns"] = arrivals
        result["latency_ns"] = latencies
    control.say(json.dumps(result))
    control.exit.wait(30)
    sub.close()
    ctx.term()


def main(argv: list[str] | None = None) -> int:
    spec: Spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    control = Control()
    if spec["driver"] == "pool-pub":
        run_publisher(spec, control)
    elif spec["driver"] == "pool-sub":
        run_subscriber(spec, control)
    else:
        raise SystemExit(f"unknown driver {spec['driver']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
