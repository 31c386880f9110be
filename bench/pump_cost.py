"""``python -m bench.pump_cost``: the broker task's own CPU per message (``Broker._pump``,
the Python thread alone), in process, per batch size (docs/performance.md, "Where the time
goes").

A real ``Broker`` on ipc:// endpoints with the repository's schemas and a generous
``publish`` rate (both checks on); a DEALER queues ``--messages`` pre-encoded messages
(release v2, distinct ids) in batches of B before the clock starts; a SUB in another
ZeroMQ context drains the XPUB from a thread. The figure is ``time.thread_time`` of the
pumping thread over the run divided by the messages, the best of ``--repeat`` runs (the
least disturbed on a shared machine). Every message must be accepted.

    python -m bench.pump_cost --batch 1 --batch 100 --messages 50000 --repeat 5
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import msgpack
import zmq

from bench import message, servers
from busd.config import Config
from busd.kernel.admission import Admission
from busd.kernel.buckets import RateTable
from busd.kernel.schemas import SchemaGate
from busd.schemacheck import load_checked
from busd.transport.broker import Broker
from busd_protocol.rates import Limit


def _bodies(count: int, data: dict[str, object]) -> list[bytes]:
    base = {
        "topic": message.TOPIC,
        "schema": message.SCHEMA,
        "version": message.VERSION,
        "publisher": message.PUBLISHER,
        "ts": time.time_ns(),
        "data": data,
    }
    return [msgpack.packb(dict(base, id=f"m{i:09d}")) for i in range(count)]


def measure(batch: int, count: int, payload: str = "small") -> float:
    """µs of the pumping thread's CPU per message, one run."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(
            pub_endpoint=f"ipc://{tmp}/pub.sock",
            sub_endpoint=f"ipc://{tmp}/sub.sock",
            warmup=0.0,
            sub_hwm=count + 1000,
            pub_hwm=count + 1000,
            reply_hwm=count + 1000,
            linger=0.0,
        )
        rates = RateTable({"publish": Limit.of(1e9, 1e9)}, time.monotonic())
        gate = SchemaGate(load_checked(servers.REPO / "schemas"))
        admission = Admission(rates, gate, config.max_message_bytes)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sub_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        broker = Broker(ctx, config, admission)
        broker.bind()
        xpub = broker._xpub
        assert xpub is not None
        sub = sub_ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"release.")
        sub.connect(config.sub_endpoint)
        deadline = time.monotonic() + 5
        while broker.stats.subscriptions == 0:
            broker.subscriptions.read(xpub)
            assert time.monotonic() < deadline, "the subscription never arrived"
            time.sleep(0.01)
        got = [0]

        def drain() -> None:
            while got[0] < count and sub.poll(5000):
                sub.recv_multipart(copy=False)
                got[0] += 1

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        pub = ctx.socket(zmq.DEALER)
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.RCVHWM, 0)
        pub.connect(config.pub_endpoint)
        data = message.PAYLOADS[payload]
        topic = message.TOPIC.encode()
        bodies = _bodies(count, data)
        seq = 1
        for start in range(0, count, batch):
            frames = [b"B\x01" + seq.to_bytes(8, "big")]
            for body in bodies[start : start + batch]:
                frames += [topic, body]
            pub.send_multipart(frames)
            seq += len(frames) // 2
        time.sleep(0.5)  # the DEALER hands its queue to busd's ROUTER (ipc: quick)
        handled = 0
        t0 = time.thread_time()
        while handled < count:
            n = broker._pump(256)
            if not n:
                time.sleep(0)
            handled += n
        spent = time.thread_time() - t0
        accepted = broker.stats.accepted
        drainer.join(10)
        broker.close(linger=0)
        pub.close(linger=0)
        sub.close(linger=0)
        ctx.term()
        sub_ctx.term()
        if accepted != count:
            raise RuntimeError(f"accepted {accepted} of {count}")
        return spent / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, action="append", help="batch size (repeatable)")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--payload", choices=sorted(message.PAYLOADS), default="small")
    args = parser.parse_args()
    for batch in args.batch or [1, 10, 100]:
        runs = [measure(batch, args.messages, args.payload) for _ in range(args.repeat)]
        print(
            f"batch {batch:>4} ({args.payload}): best {min(runs):.2f} µs/msg, "
            f"median {sorted(runs)[len(runs) // 2]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
