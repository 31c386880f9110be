"""``python -m bench.sub_cost``: what one received message costs busd_client's Subscriber
and nats-py's subscriber, in the same run (docs/performance.md, "Subscriber cost").

One busd and one nats-server (bench.servers). Per repeat and per system, this process
subscribes (``busd_client.Subscriber`` with a ``recv(timeout)`` loop, as an application with
a stop condition writes it; nats-py with a callback per message, as bench/drivers_nats.py
does) and a publisher process sends ``--messages`` messages (bench.message's release v2,
a fresh envelope each) paced at ``--rate`` msg/s, in chunks of 100 (busd_client's
``publish_many``; nats-py's ``publish`` per message, its own buffering). The figure is the
receiving thread's CPU (``time.thread_time``) from the first measured message to the last,
per message received; the process's too (libzmq's I/O thread; nats-py has none).

    python -m bench.sub_cost --repeat 5 --messages 40000 --rate 20000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from typing import Any

from bench import message, servers

CHUNK = 100
IDLE = 2.0  # seconds without a message: the run is over (a loaded machine stalls for less)


def _pace(n: int, rate: float, send_chunk: Any) -> None:
    t0 = time.monotonic()
    sent = 0
    while sent < n:
        k = min(CHUNK, n - sent)
        send_chunk(k)
        sent += k
        ahead = t0 + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def _publish_busd(endpoint: str, n: int, rate: float) -> None:
    from busd_client import Publisher

    item = (message.TOPIC, message.SCHEMA, message.VERSION, message.DATA)
    with Publisher(endpoint, name=message.PUBLISHER, timeout=30.0) as pub:
        _pace(n, rate, lambda k: pub.publish_many([item] * k))
        pub.flush(30.0)


def _publish_nats(url: str, n: int, rate: float) -> None:
    async def run() -> None:
        import nats

        nc = await nats.connect(url)
        env = message.Envelopes()
        t0 = time.monotonic()
        sent = 0
        while sent < n:
            for _ in range(min(CHUNK, n - sent)):
                await nc.publish(message.TOPIC, env.encode(message.TOPIC))
                sent += 1
            ahead = t0 + sent / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await nc.flush(30)
        await nc.close()

    asyncio.run(run())


def _start(target: Any, *args: Any) -> multiprocessing.Process:
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def busd_run(busd: servers.Server, n: int, rate: float) -> dict[str, float]:
    from busd_client import Publisher, Subscriber

    probe_topic = message.warmup_topic(0)
    with Subscriber(busd.sub_endpoint, [message.TOPIC, probe_topic]) as sub:
        with Publisher(busd.pub_endpoint, name=message.PUBLISHER, timeout=30.0) as probe:
            while sub.recv(0.05) is None:  # the subscription reached busd
                probe.publish(probe_topic, message.SCHEMA, message.VERSION, message.DATA)
        proc = _start(_publish_busd, busd.pub_endpoint, n, rate)
        recv = sub.recv
        got = 0
        cpu0 = thread0 = 0.0
        while True:
            m = recv(IDLE if got else 30.0)
            if m is None:
                break
            if m.topic == probe_topic:
                continue
            if not got:
                cpu0, thread0 = time.process_time(), time.thread_time()
            got += 1
        cpu, thread = time.process_time() - cpu0, time.thread_time() - thread0
        proc.join(30)
    # the last IDLE wait is in the figures: subtract nothing, it is one poll
    return {
        "received": got,
        "thread_us": thread / max(1, got - 1) * 1e6,
        "cpu_us": cpu / max(1, got - 1) * 1e6,
    }


def nats_run(server: servers.Server, n: int, rate: float) -> dict[str, float]:
    async def run() -> dict[str, float]:
        import nats

        nc = await nats.connect(server.pub_endpoint)
        state = {"got": 0, "last": 0.0, "cpu0": 0.0, "thread0": 0.0}

        async def on_message(msg: Any) -> None:
            if not state["got"]:
                state["cpu0"], state["thread0"] = time.process_time(), time.thread_time()
            state["got"] += 1
            state["last"] = time.monotonic()

        await nc.subscribe(message.TOPIC, cb=on_message)
        await nc.flush()
        proc = _start(_publish_nats, server.pub_endpoint, n, rate)
        start = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            idle_since = state["last"] or start
            if time.monotonic() - idle_since > (IDLE if state["got"] else 30.0):
                break
        cpu, thread = time.process_time() - state["cpu0"], time.thread_time() - state["thread0"]
        await nc.close()
        proc.join(30)
        got = int(state["got"])
        return {
            "received": got,
            "thread_us": thread / max(1, got - 1) * 1e6,
            "cpu_us": cpu / max(1, got - 1) * 1e6,
        }

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sub_cost", description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--messages", type=int, default=40_000)
    p.add_argument("--rate", type=float, default=20_000.0)
    args = p.parse_args(argv)
    busd = servers.start_busd()
    nats_server = servers.start_nats()
    runs: dict[str, list[dict[str, float]]] = {"busd_client": [], "nats-py": []}
    try:
        for r in range(args.repeat):
            for name, fn, server in (
                ("busd_client", busd_run, busd),
                ("nats-py", nats_run, nats_server),
            ):
                res = fn(server, args.messages, args.rate)
                runs[name].append(res)
                sys.stderr.write(
                    f"repeat {r + 1} {name:12} received {res['received']}: "
                    f"{res['thread_us']:.2f} µs/msg receiving thread, {res['cpu_us']:.2f} process\n"
                )
    finally:
        busd.stop()
        nats_server.stop()
    print(
        f"{args.repeat} repeats of {args.messages} messages at {args.rate:g} msg/s; medians; "
        "ratio: the median of busd_client/nats-py pairs"
    )
    print("| figure | nats-py | busd_client | ratio |")
    print("|---|---|---|---|")
    for key, label in (
        ("thread_us", "receiving thread CPU µs/msg"),
        ("cpu_us", "process CPU µs/msg"),
    ):
        ours = [x[key] for x in runs["busd_client"]]
        theirs = [x[key] for x in runs["nats-py"]]
        ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
        print(
            f"| {label} | {statistics.median(theirs):.2f} | {statistics.median(ours):.2f} | "
            f"{ratio:.3f}× |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
