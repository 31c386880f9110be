"""ZeroMQ publishers and the SUB subscriber every ZeroMQ-based system shares.

Publishers: ``zmq-bind`` (a PUB that binds: PUB -> SUB with no broker), ``zmq-connect``
(a PUB connected to zmq.proxy's XSUB), ``busd-raw`` (a DEALER speaking protocol v1 from
docs/protocol.md, reading every reply; ``batch`` K > 1 in its spec: K messages per ZeroMQ
message, docs/protocol.md §1) and ``busd-client`` (busd_client.Publisher; ``max_batch`` N in
its spec: ``Publisher(max_batch=N, linger=0.0)`` fed by ``publish_many`` N at a time).
All send with frame-level ``send``/``SNDMORE``, the cheapest pyzmq path.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
import zmq

from bench import message
from bench.worker import Control, Spec, Tally, idle_done, run_sync_publisher
from busd_protocol.frames import encode_header

NO_CLIENT_BATCHING = "batching not available in this client"

_SNDMORE = zmq.SNDMORE
_NOBLOCK = zmq.NOBLOCK
REPLY_EVERY = 32  # busd-raw reads replies (without waiting) every this many sends
WINDOW = 5000  # busd-raw: most messages in flight before it waits for replies
FINISH_TIMEOUT = 15.0  # seconds to wait for the last replies


class ZmqPub:
    """A PUB socket: bound (no broker) or connected (to an XSUB)."""

    def __init__(self, spec: Spec) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        if spec["driver"] == "zmq-bind":
            self.sock.bind(spec["endpoint"])
        else:
            self.sock.connect(spec["endpoint"])
        self.env = message.Envelopes(data=message.payload(spec.get("payload")))
        self.topics = message.topics(spec.get("topics", 1))
        self.frames = [t.encode() for t in self.topics]
        self.warm = message.warmup_topic(spec["index"])

    def warmup(self) -> None:
        self.sock.send(self.warm.encode(), _SNDMORE)
        self.sock.send(self.env.encode(self.warm))

    def begin(self) -> None:
        pass

    def send(self, start: int, n: int) -> None:
        send, encode, topics, frames = self.sock.send, self.env.encode, self.topics, self.frames
        nt = len(topics)
        for i in range(start, start + n):
            k = i % nt
            send(frames[k], _SNDMORE)
            send(encode(topics[k]))

    def finish(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.sock.close(linger=1000)
        self.ctx.term()


class BusdRawPub(ZmqPub):
    """Protocol v1 by hand: a DEALER, a counter for sequence numbers, every reply read."""

    def __init__(self, spec: Spec) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # never let our own queue drop busd's replies
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(spec["endpoint"])
        self.env = message.Envelopes(
            spec.get("publisher", message.PUBLISHER), message.payload(spec.get("payload"))
        )
        self.topics = message.topics(spec.get("topics", 1))
        self.frames = [t.encode() for t in self.topics]
        self.warm = message.warmup_topic(spec["index"])
        self.seq = 0
        self.first_measured = 1 << 62  # sequence numbers below this are warm-up
        self.answered = 0
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.warm_answered = 0
        self.batch = int(spec.get("batch", 1))

    def warmup(self) -> None:
        self.seq += 1
        self._send_one(self.seq, self.warm)
        self._read_replies(0)

    def _send_one(self, seq: int, topic: str) -> None:
        self.sock.send(encode_header(seq), _SNDMORE)
        self.sock.send(topic.encode(), _SNDMORE)
        self.sock.send(self.env.encode(topic))

    def begin(self) -> None:
        self.first_measured = self.seq + 1

    def send(self, start: int, n: int) -> None:
        if self.batch > 1:
            self._send_batches(start, n)
            return
        send, encode, topics, frames = self.sock.send, self.env.encode, self.topics, self.frames
        pack = encode_header
        nt = len(topics)
        seq = self.seq
        for i in range(start, start + n):
            seq += 1
            k = i % nt
            send(pack(seq), _SNDMORE)
            send(frames[k], _SNDMORE)
            send(encode(topics[k]))
            if not seq % REPLY_EVERY:
                self.seq = seq
                self._read_replies(0)
                while self.seq - self.first_measured + 1 - self.answered > WINDOW:
                    self._read_replies(100)
        self.seq = seq

    def _send_batches(self, start: int, n: int) -> None:
        """Messages ``start .. start+n-1`` as batches of ``self.batch``: one ZeroMQ message
        [header(first seq), topic, envelope, topic, envelope, ...] each."""
        encode, topics, frames, k = self.env.encode, self.topics, self.frames, self.batch
        nt = len(topics)
        end = start + n
        for first in range(start, end, k):
            parts: list[bytes] = [encode_header(self.seq + 1)]
            for i in range(first, min(first + k, end)):
                t = i % nt
                parts += (frames[t], encode(topics[t]))
            self.sock.send_multipart(parts)
            self.seq += (len(parts) - 1) // 2
            self._read_replies(0)
            while self.seq - self.first_measured + 1 - self.answered > WINDOW:
                self._read_replies(100)

    def _read_replies(self, wait_ms: int) -> None:
        sock = self.sock
        if wait_ms and not sock.poll(wait_ms):
            return
        first = self.first_measured
        while True:
            try:
                frame = sock.recv(_NOBLOCK)
            except zmq.Again:
                return
            reply = msgpack.unpackb(frame)
            for lo, hi in reply["acc"]:
                if hi >= first:
                    n = hi - max(lo, first) + 1
                    self.answered += n
                    self.accepted += n
            for rej in reply["rej"]:
                if rej["seq"] is not None and rej["seq"] >= first:
                    self.answered += 1
                    self.rejected[rej["code"]] = self.rejected.get(rej["code"], 0) + 1

    def finish(self) -> dict[str, Any]:
        measured = self.seq - self.first_measured + 1
        deadline = time.monotonic() + FINISH_TIMEOUT
        while self.answered < measured and time.monotonic() < deadline:
            self._read_replies(100)
        return {
            "answered": self.answered,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "unanswered": measured - self.answered,
        }

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class BusdClientPub:
    """busd_client.Publisher, used the way an application would."""

    def __init__(self, spec: Spec) -> None:
        from busd_client import Publisher

        self.max_batch = int(spec.get("max_batch", 0))  # 0: the constructor's default
        batching: dict[str, Any] = {}
        if self.max_batch:
            if why := client_batching_missing():
                raise SystemExit(why)
            batching = {"max_batch": self.max_batch, "linger": 0.0}
        self.pub = Publisher(
            spec["endpoint"],
            name=spec.get("publisher", message.PUBLISHER),
            timeout=FINISH_TIMEOUT,
            context=zmq.Context(),
            **batching,
        )
        self.topics = message.topics(spec.get("topics", 1))
        self.warm = message.warmup_topic(spec["index"])
        self.data = message.payload(spec.get("payload"))

    def warmup(self) -> None:
        self.pub.publish(self.warm, message.SCHEMA, message.VERSION, self.data)

    def begin(self) -> None:
        self.pub.flush(FINISH_TIMEOUT)  # warm-up fates are not part of the measurement

    def send(self, start: int, n: int) -> None:
        if self.max_batch > 1:
            self._send_many(start, n)
            return
        publish, topics, data = self.pub.publish, self.topics, self.data
        schema, version = message.SCHEMA, message.VERSION
        nt = len(topics)
        for i in range(start, start + n):
            publish(topics[i % nt], schema, version, data)

    def _send_many(self, start: int, n: int) -> None:
        """``publish_many`` with ``max_batch`` messages at a time: due together, one batch."""
        many, topics, data, k = self.pub.publish_many, self.topics, self.data, self.max_batch
        schema, version = message.SCHEMA, message.VERSION
        nt = len(topics)
        end = start + n
        for first in range(start, end, k):
            many(
                [(topics[i % nt], schema, version, data) for i in range(first, min(first + k, end))]
            )

    def finish(self) -> dict[str, Any]:
        failures = self.pub.flush()
        rejected: dict[str, int] = {}
        unanswered = 0
        for err in failures:
            if type(err).__name__ == "PublishTimeout":
                unanswered += 1
            else:
                code = str(getattr(err, "code", type(err).__name__))
                rejected[code] = rejected.get(code, 0) + 1
        return {"failures": len(failures), "rejected": rejected, "unanswered": unanswered}

    def close(self) -> None:
        self.pub.close(timeout=0.1)


def client_batching_missing() -> str | None:
    """Why busd_client.Publisher cannot batch here (``max_batch``, ``linger``,
    ``publish_many``: issue 17's client API), or None when it can."""
    import inspect

    from busd_client import Publisher

    params = inspect.signature(Publisher.__init__).parameters
    lacks = [p for p in ("max_batch", "linger") if p not in params]
    if not hasattr(Publisher, "publish_many"):
        lacks.append("publish_many")
    if lacks:
        return f"{NO_CLIENT_BATCHING} (busd_client.Publisher has no {', '.join(lacks)})"
    return None


def run_sub(spec: Spec, control: Control) -> None:
    """A stock SUB socket, connected to every endpoint given."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if spec.get("env"):  # a busd with authentication on: CURVE keys from the environment
        from busd_client.keys import ClientKeys

        keys = ClientKeys.from_env()
        if keys is not None:
            keys.apply(sock)
    measured = (message.MANY_PREFIX if spec.get("topics", 1) > 1 else message.TOPIC).encode()
    waiting = {message.warmup_topic(i).encode() for i in range(spec["publishers"])}
    sock.setsockopt(zmq.SUBSCRIBE, measured)
    sock.setsockopt(zmq.SUBSCRIBE, message.WARMUP_PREFIX.encode())
    for endpoint in spec["endpoints"]:
        sock.connect(endpoint)
    deadline = time.monotonic() + spec.get("deadline", 60.0)
    while waiting and time.monotonic() < deadline:
        if sock.poll(100):
            waiting.discard(sock.recv())
            while sock.getsockopt(zmq.RCVMORE):  # the envelope, and busd's delivery stamp
                sock.recv()
    control.say("ready")
    tally = Tally()
    latency = bool(spec.get("latency"))
    samples = tally.latencies
    idle = spec.get("idle", 0.3)
    recv, poll, clock, now_ns, stamp = (
        sock.recv,
        sock.poll,
        time.monotonic_ns,
        time.time_ns,
        message.stamp,
    )
    while True:
        if not poll(50):
            if idle_done(control, tally, idle, deadline):
                break
            continue
        started = clock()
        before = count = tally.received
        while True:
            try:
                topic = recv(_NOBLOCK)
            except zmq.Again:
                break
            body_f = recv(copy=False)  # the rest of a multipart message is already here
            if body_f.more:
                recv()  # busd's delivery stamp (docs/protocol.md §3), not measured here
            body = body_f.bytes
            if topic.startswith(measured):
                count += 1
                if latency:
                    samples.append(now_ns() - stamp(body))
        tally.received = count
        tally.batch(started, before)
    control.say(json.dumps(tally.result()))
    control.exit.wait(30)
    sock.close(linger=0)
    ctx.term()


def run(spec: Spec, control: Control) -> None:
    driver = spec["driver"]
    if driver == "zmq-sub":
        run_sub(spec, control)
        return
    pub: Any
    if driver == "busd-raw":
        pub = BusdRawPub(spec)
    elif driver == "busd-client":
        pub = BusdClientPub(spec)
    else:
        pub = ZmqPub(spec)
    run_sync_publisher(pub, spec, control)
