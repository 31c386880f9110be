"""Helpers for the attack tests: a canary publisher/subscriber pair, a watchdog listener,
busd's RSS, and a raw ZMTP 3.0 peer that can send what no libzmq client would (an
unfinished multipart message, millions of frames in one write).

The raw peer is written from the ZMTP 3.0 specification (rfc.zeromq.org 23): a 64-byte
greeting, a READY command naming the socket type, then frames of one flag byte (MORE 0x01,
LONG 0x02) and a 1- or 8-byte size.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import zmq
from rawproto import envelope, header

TOPIC = "release.canary"


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def frame(data: bytes, more: bool = False) -> bytes:
    """One ZMTP 3.0 message frame."""
    flags = 0x01 if more else 0x00
    if len(data) > 255:
        return bytes((flags | 0x02,)) + struct.pack(">Q", len(data)) + data
    return bytes((flags, len(data))) + data


def frames(parts: list[bytes]) -> bytes:
    """A whole multipart message as ZMTP 3.0 frames."""
    last = len(parts) - 1
    return b"".join(frame(p, i < last) for i, p in enumerate(parts))


def _command(name: bytes, props: dict[bytes, bytes]) -> bytes:
    body = bytes((len(name),)) + name
    for key, value in props.items():
        body += bytes((len(key),)) + key + struct.pack(">I", len(value)) + value
    return bytes((0x04, len(body))) + body


class RawPeer:
    """A TCP connection to busd that has completed the ZMTP 3.0 NULL handshake."""

    def __init__(self, port: int, socket_type: bytes = b"DEALER", timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
        self.sock.sendall(greeting + b"\x00" * 32)
        self.sock.sendall(_command(b"READY", {b"Socket-Type": socket_type}))
        self._buf = b""
        self._take(64, time.monotonic() + timeout)  # the peer's greeting
        self._frame(time.monotonic() + timeout)  # its READY command

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no data from busd before the deadline")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("busd closed the connection")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _frame(self, deadline: float) -> tuple[int, bytes]:
        flags = self._take(1, deadline)[0]
        size_b = self._take(8 if flags & 0x02 else 1, deadline)
        return flags, self._take(int.from_bytes(size_b, "big"), deadline)

    def recv_message(self, timeout: float = 5.0) -> list[bytes]:
        """The next multipart message (commands such as PING are skipped)."""
        deadline = time.monotonic() + timeout
        parts: list[bytes] = []
        while True:
            flags, body = self._frame(deadline)
            if flags & 0x04:
                continue
            parts.append(body)
            if not flags & 0x01:
                return parts


def publish_parts(seq: int, topic: str = "release.shop") -> list[bytes]:
    """The three frames of a valid publish."""
    return [header(seq), topic.encode(), msgpack.packb(envelope(topic))]


class Canary:
    """A well-behaved publisher and subscriber beside an attack, in one thread.

    Publishes one message on ``TOPIC`` every ``interval`` seconds and measures each one's
    latency from send to delivery. ``lost`` is what was accepted but never delivered, or
    never answered.
    """

    def __init__(self, pub_endpoint: str, sub_endpoint: str, interval: float = 0.005):
        self.pub_endpoint = pub_endpoint
        self.sub_endpoint = sub_endpoint
        self.interval = interval
        self.sent: dict[int, float] = {}
        self.delivered: dict[int, float] = {}
        self.answers: dict[int, str] = {}
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Canary:
        self._thread.start()
        if not self._subscribed.wait(10):
            raise AssertionError(f"canary never subscribed: {self.error!r}")
        return self

    def stop(self, settle: float = 5.0) -> None:
        """Stop publishing, wait until every message sent is answered and (if accepted)
        delivered, or ``settle`` seconds pass."""
        self._stop.set()
        self._thread.join(settle + 5)
        if self.error is not None:
            raise AssertionError(f"canary failed: {self.error!r}")
        self._settle = settle

    def _run(self) -> None:
        ctx = zmq.Context()
        try:
            pub = ctx.socket(zmq.DEALER)
            sub = ctx.socket(zmq.SUB)
            for s in (pub, sub):
                s.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
            sub.connect(self.sub_endpoint)
            pub.connect(self.pub_endpoint)
            self._loop(pub, sub)
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            ctx.destroy(linger=0)

    def _loop(self, pub: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)
        poller.register(sub, zmq.POLLIN)
        seq = 0
        next_send = time.monotonic()
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if self._stop.is_set():
                if settle_until is None:
                    settle_until = now + 5.0
                done = not self.lost()
                if done or now > settle_until:
                    return
            elif now >= next_send:
                seq += 1
                env = envelope(TOPIC, id=f"canary-{seq}")
                pub.send_multipart([header(seq), TOPIC.encode(), msgpack.packb(env)])
                self.sent[seq] = time.monotonic()
                next_send += self.interval
                if next_send < now:  # fell behind (the test thread held the GIL): no burst
                    next_send = now + self.interval
                # The subscription takes effect asynchronously: wait for the first delivery.
                if not self._subscribed.is_set():
                    if sub.poll(100):
                        self._subscribed.set()
                        self._drain(pub, sub)
                    # Probes before the subscription are not counted.
                    self.sent.clear()
                    self.delivered.clear()
                    self.answers.clear()
                    continue
            timeout = max(0.0, next_send - time.monotonic()) if not self._stop.is_set() else 0.05
            poller.poll(timeout * 1000)
            self._drain(pub, sub)

    def _drain(self, pub: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
        while True:
            try:
                _topic, body = sub.recv_multipart(zmq.NOBLOCK)[:2]  # and the stamp
            except zmq.Again:
                break
            env = msgpack.unpackb(body)
            seq = int(env["id"].split("-")[1])
            self.delivered.setdefault(seq, time.monotonic())
        while True:
            try:
                reply = msgpack.unpackb(pub.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
            for lo, hi in reply["acc"]:
                for s in range(lo, hi + 1):
                    self.answers[s] = "accepted"
            for rej in reply["rej"]:
                self.answers[rej["seq"]] = rej["code"]

    # -- results --------------------------------------------------------------------------
    def latencies(self) -> list[float]:
        return sorted(self.delivered[s] - t for s, t in self.sent.items() if s in self.delivered)

    def p99(self) -> float:
        lat = self.latencies()
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("inf")

    def lost(self) -> list[int]:
        """Sent but unanswered, or accepted but not delivered."""
        return [
            s
            for s in self.sent
            if self.answers.get(s) is None
            or (self.answers[s] == "accepted" and s not in self.delivered)
        ]

    def summary(self) -> dict[str, Any]:
        lat = self.latencies()
        return {
            "sent": len(self.sent),
            "delivered": len(self.delivered),
            "refused": sum(1 for c in self.answers.values() if c != "accepted"),
            "lost": len(self.lost()),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
            "p99_ms": round(self.p99() * 1000, 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        }


class Watchdog:
    """A NOTIFY_SOCKET that records when each ``WATCHDOG=1`` arrives."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="busd-wd-", dir="/tmp")
        self.path = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self.pings: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            if data.split(b"\n", 1)[0] == b"WATCHDOG=1":
                self.pings.append(time.monotonic())

    def max_gap(self, since: float) -> float:
        """The longest time without a ping from ``since`` until now."""
        marks = [since, *(p for p in self.pings if p >= since), time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(marks))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def watchdog() -> Iterator[Watchdog]:
    wd = Watchdog()
    try:
        yield wd
    finally:
        wd.close()
