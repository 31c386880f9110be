"""``python -m bench.busd_cpu``: busd's CPU per delivered message under a flat-out raw load,
per batch size (docs/performance.md, "Where the time goes").

One busd per batch size (bench.servers.start_busd: schema and rate checks on, the generous
``publish`` rate). A raw publisher (this process, pre-encoded envelopes with distinct ids,
docs/protocol.md §1.2 batches, a window of 10,000 unanswered messages) sends ``--messages``
messages; a raw subscriber (a child process) counts them. busd's CPU is read from
/proc/PID/stat (every thread: libzmq's I/O threads included) and from its main thread's
/proc/PID/task/PID/stat (the Python code alone), from the first delivery to the last.
Every publish must be accepted and every message delivered, or the run fails.

    python -m bench.busd_cpu --batch 1 --batch 10 --batch 100 --messages 200000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import subprocess
import tempfile
import time
from typing import Any

import msgpack
import zmq

from bench import message, servers

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _subscribe(endpoint: str, count: int, ready: Any, done: Any) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"release.")
    sub.connect(endpoint)
    ready.set()
    got = 0
    while got < count:
        if sub.poll(30_000) == 0:
            break
        frames = sub.recv_multipart(copy=False)
        if frames[0].bytes == message.TOPIC.encode():
            got += 1
    done.value = got
    ctx.destroy(linger=0)


def _envelopes(count: int) -> list[bytes]:
    base = {
        "topic": message.TOPIC,
        "schema": message.SCHEMA,
        "version": message.VERSION,
        "publisher": message.PUBLISHER,
        "ts": time.time_ns(),
        "data": message.DATA,
    }
    return [msgpack.packb(dict(base, id=f"m{i:09d}")) for i in range(count)]


def _header(seq: int) -> bytes:
    return b"B\x01" + seq.to_bytes(8, "big")


def _top(collapsed: str, lines: int = 25) -> str:
    """The hottest functions of py-spy's collapsed stacks, by own samples (the leaf)."""
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(n)
        total += int(n)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:lines]
    return "\n".join(f"{100 * n / total:5.1f}%  {leaf}" for leaf, n in top)


def run(batch: int, count: int, extra: tuple[str, ...], profile: str = "") -> dict[str, float]:
    server = servers.start_busd(servers.BusdOptions(rates=True, extra=extra), f"cpu-{batch}")
    ctx = zmq.Context()
    try:
        ready, done = mp.Event(), mp.Value("q", -1)
        sub = mp.Process(target=_subscribe, args=(server.sub_endpoint, count, ready, done))
        sub.start()
        ready.wait(10)
        pub = ctx.socket(zmq.DEALER)
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.RCVHWM, 0)
        pub.connect(server.pub_endpoint)
        # Warm-up and the slow joiner: probes on another topic until one is accepted, then
        # a moment for the subscription (probes are not counted by the subscriber).
        probe = msgpack.packb(
            {
                "topic": "release.probe",
                "schema": message.SCHEMA,
                "version": message.VERSION,
                "id": "probe",
                "publisher": message.PUBLISHER,
                "ts": time.time_ns(),
                "data": message.DATA,
            }
        )
        seq = 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pub.send_multipart([_header(seq), b"release.probe", probe])
            seq += 1
            reply = msgpack.unpackb(pub.recv())
            if reply["acc"]:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        bodies = _envelopes(count)
        topic = message.TOPIC.encode()
        pid = server.proc.pid
        spy = None
        out = ""
        if profile:
            with tempfile.NamedTemporaryFile(prefix="busd-cpu-", suffix=".txt", delete=False) as f:
                out = f.name
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "500"]
                # --native stops busd for each sample (py-spy cannot unwind C frames of a
                # running process); Python frames alone are read without stopping it.
                + (["--native"] if profile == "native" else ["--nonblocking"])
                + ["--output", out],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        cpu0, main0, t0 = cpu_seconds(pid), cpu_seconds(pid, pid), time.perf_counter()
        sent = answered = accepted = 0
        window = 10_000
        while answered < count:
            while sent < count and sent - answered < window:
                k = min(batch, count - sent)
                frames = [_header(seq)]
                for body in bodies[sent : sent + k]:
                    frames += [topic, body]
                pub.send_multipart(frames, copy=False)
                seq += k
                sent += k
            if pub.poll(10_000) == 0:
                raise RuntimeError(f"no reply: {answered} of {count} answered")
            while pub.poll(0):
                reply = msgpack.unpackb(pub.recv())
                n = sum(hi - lo + 1 for lo, hi in reply["acc"])
                accepted += n
                answered += n + len(reply["rej"])
        sub.join(60)
        cpu1, main1, t1 = cpu_seconds(pid), cpu_seconds(pid, pid), time.perf_counter()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            with open(out) as f:
                print(_top(f.read()))
            os.unlink(out)
        if accepted != count or done.value != count:
            raise RuntimeError(f"accepted {accepted}, delivered {done.value} of {count}")
        return {
            "batch": batch,
            "msg_s": count / (t1 - t0),
            "cpu_us": (cpu1 - cpu0) / count * 1e6,
            "main_us": (main1 - main0) / count * 1e6,
        }
    finally:
        ctx.destroy(linger=0)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, action="append", help="batch size (repeatable)")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--busd-flag", action="append", default=[], help="one more busd flag")
    parser.add_argument("--profile", choices=["", "python", "native"], default="")
    args = parser.parse_args()
    for batch in args.batch or [1, 10, 100]:
        for _ in range(args.repeat):
            r = run(batch, args.messages, tuple(args.busd_flag), args.profile)
            print(
                f"batch {r['batch']:>4}: {r['msg_s']:>9,.0f} msg/s  busd CPU "
                f"{r['cpu_us']:5.2f} µs/msg (main thread {r['main_us']:5.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
