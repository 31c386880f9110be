"""One publisher or subscriber process: ``python -m bench.worker '<json spec>'``.

The controller (``bench.runner``) talks to a worker with lines: the worker prints ``ready``
when it can start (a subscriber: it has seen a warm-up message from every publisher), then
one JSON result line; it reads ``go`` (publishers: start the measured phase), ``stop``
(subscribers: end once input has been idle for a moment) and ``exit`` (close and leave)
on stdin. Publishers keep sending warm-up messages on their own topic until ``go``, which
also gets past ZeroMQ's slow-joiner window.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

WARMUP_INTERVAL = 0.02  # seconds between warm-up messages
FLAT_CHUNK = 100  # flat-out: messages sent between clock reads
PACED_CHUNK = 64  # paced: most messages sent in one go when behind schedule

Spec = dict[str, Any]


class Control:
    """stdin commands, read by a thread into events; results printed as lines."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.stop = threading.Event()
        self.exit = threading.Event()
        self.stop_at = 0.0  # monotonic seconds when ``stop`` arrived
        self._hooks: list[Callable[[], None]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def on_event(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (from the reader thread) after every command."""
        self._hooks.append(hook)

    def _read(self) -> None:
        for line in sys.stdin:
            event = {"go": self.go, "stop": self.stop, "exit": self.exit}.get(line.strip())
            if event is self.stop and not self.stop_at:
                self.stop_at = time.monotonic()
            if event is not None:
                event.set()
            for hook in self._hooks:
                hook()
        self.stop_at = self.stop_at or time.monotonic()
        self.go.set()  # controller gone: unblock everything and leave
        self.stop.set()
        self.exit.set()
        for hook in self._hooks:
            hook()

    @staticmethod
    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Schedule:
    """How many messages to send now: flat-out, or paced at ``rate`` msg/s.

    Ends after ``count`` messages when given, else after ``duration`` seconds.
    """

    def __init__(self, rate: float | None, duration: float, count: int | None) -> None:
        self.rate = rate
        self.duration_ns = int(duration * 1e9)
        self.count = count

    def due(self, sent: int, elapsed_ns: int) -> int:
        """-1: finished; 0: ahead of schedule (call ``wait``); n: send n messages now."""
        count = self.count
        if count is not None:
            if sent >= count:
                return -1
        elif elapsed_ns >= self.duration_ns:
            return -1
        if self.rate is None:
            return FLAT_CHUNK if count is None else min(FLAT_CHUNK, count - sent)
        n = min(PACED_CHUNK, int(self.rate * elapsed_ns / 1e9) + 1 - sent)
        if count is not None:
            n = min(n, count - sent)
        return max(n, 0)

    def wait(self, sent: int, elapsed_ns: int) -> float:
        """Seconds until the next message is due (paced only), at most 5 ms."""
        assert self.rate is not None
        return min(0.005, max(0.0, sent / self.rate - elapsed_ns / 1e9))


class SyncPublisher(Protocol):
    def warmup(self) -> None: ...
    def begin(self) -> None: ...
    def send(self, start: int, n: int) -> None: ...
    def finish(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class AsyncPublisher(Protocol):
    async def warmup(self) -> None: ...
    async def begin(self) -> None: ...
    async def send(self, start: int, n: int) -> None: ...
    async def finish(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


def schedule_of(spec: Spec) -> Schedule:
    return Schedule(spec.get("rate"), spec.get("duration", 1.0), spec.get("count"))


class Paced(NamedTuple):
    sent: int
    t_start: int  # monotonic ns
    t_end: int
    cpu0: float  # process_time at the start: this process, all threads (libzmq's too)


def send_paced(spec: Spec, send: Callable[[int, int], None]) -> Paced:
    """Call ``send(already_sent, n)`` on ``spec``'s schedule until it ends (sync callers)."""
    sched = schedule_of(spec)
    clock = time.monotonic_ns
    sent = 0
    cpu0 = time.process_time()
    t0 = clock()
    while True:
        elapsed = clock() - t0
        n = sched.due(sent, elapsed)
        if n > 0:
            send(sent, n)
            sent += n
        elif n == 0:
            time.sleep(sched.wait(sent, elapsed))
        else:
            break
    return Paced(sent, t0, clock(), cpu0)


def run_sync_publisher(pub: SyncPublisher, spec: Spec, control: Control) -> None:
    while not control.go.is_set():
        pub.warmup()
        control.go.wait(WARMUP_INTERVAL)
    pub.begin()
    run = send_paced(spec, pub.send)
    result = pub.finish()
    result.update(
        sent=run.sent, t_start=run.t_start, t_end=run.t_end, cpu_s=time.process_time() - run.cpu0
    )
    control.say(json.dumps(result))
    control.exit.wait(120)
    pub.close()


async def run_async_publisher(pub: AsyncPublisher, spec: Spec, control: Control) -> None:
    while not control.go.is_set():
        await pub.warmup()
        await asyncio.sleep(WARMUP_INTERVAL)
    await pub.begin()
    sched = schedule_of(spec)
    clock = time.monotonic_ns
    sent = 0
    cpu0 = time.process_time()  # this process, all threads (libzmq's I/O thread too)
    t0 = clock()
    while True:
        elapsed = clock() - t0
        n = sched.due(sent, elapsed)
        if n > 0:
            await pub.send(sent, n)
            sent += n
        elif n == 0:
            await asyncio.sleep(sched.wait(sent, elapsed))
        else:
            break
    t_end = clock()
    result = await pub.finish()
    result.update(sent=sent, t_start=t0, t_end=t_end, cpu_s=time.process_time() - cpu0)
    control.say(json.dumps(result))
    await asyncio.to_thread(control.exit.wait, 120)
    await pub.close()


class Tally:
    """What a subscriber counts: measured messages, their window, latency samples (ns)."""

    __slots__ = ("first", "last", "latencies", "received")

    def __init__(self) -> None:
        self.received = 0
        self.first = 0
        self.last = 0
        self.latencies: list[int] = []

    def batch(self, started: int, count_before: int) -> None:
        """After reading a batch that began at ``started`` (monotonic ns)."""
        if self.received != count_before:
            if not self.first:
                self.first = started
            self.last = time.monotonic_ns()

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "received": self.received,
            "t_first": self.first,
            "t_last": self.last,
        }
        if self.latencies:
            out["latency_us"] = percentiles(self.latencies)
        return out


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000.0

    return {
        "p50": at(0.50),
        "p99": at(0.99),
        "p99.9": at(0.999),
        "max": ordered[-1] / 1000.0,
        "n": float(n),
    }


def idle_done(control: Control, tally: Tally, idle_s: float, deadline: float) -> bool:
    """A subscriber ends once told to stop and input has been quiet, or at its deadline."""
    now = time.monotonic()
    if now >= deadline:
        return True
    if not control.stop.is_set():
        return False
    quiet_since = max(tally.last / 1e9, control.stop_at)
    return now - quiet_since >= idle_s


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec: Spec = json.loads(args[0])
    driver = spec["driver"]
    if driver == "busd-ruby":  # before Control reads stdin: the Ruby process reads it
        from bench import ruby_publisher

        ruby_publisher.exec_worker(args[0])
    control = Control()
    runner: Callable[[Spec, Control], Awaitable[None] | None]
    if driver in ("zmq-bind", "zmq-connect", "busd-raw", "busd-client", "zmq-sub"):
        from bench import drivers_zmq as mod
    elif driver in ("nats", "nats-sub"):
        from bench import drivers_nats as mod  # type: ignore[no-redef]
    elif driver in ("redis", "redis-sub"):
        from bench import drivers_redis as mod  # type: ignore[no-redef]
    else:
        raise SystemExit(f"unknown driver {driver!r}")
    runner = mod.run
    outcome = runner(spec, control)
    if asyncio.iscoroutine(outcome):
        asyncio.run(outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
