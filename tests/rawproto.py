"""Protocol version 1 written from docs/protocol.md alone: no busd_client, no busd imports.

Tests use it to speak to busd the way a client in another language would.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import zmq


def header(seq: int, version: int = 1) -> bytes:
    return b"B" + bytes([version]) + seq.to_bytes(8, "big")


def envelope(topic: str = "release.shop", **overrides: Any) -> dict[str, Any]:
    """A valid envelope: a release v2 event, or instance-state v1 on ``instance.`` topics."""
    env: dict[str, Any] = {
        "topic": topic,
        "schema": "release",
        "version": 2,
        "id": f"id-{time.time_ns()}",
        "publisher": "tester",
        "ts": time.time_ns(),
        "data": {
            "slug": "https://apps.example/shop/releases/42",
            "cmd": "bin/web",
            "env": {"RACK_ENV": "production"},
            "flag": "extra_cpu",
        },
    }
    if topic.startswith("instance."):
        env.update(
            schema="instance-state",
            version=1,
            data={
                "app": "shop",
                "instance_id": "web.1",
                "state": "up",
                "host": "h1",
                "version": "v42",
                "reported_at": time.time_ns(),
            },
        )
    env.update(overrides)
    return env


def publish(
    sock: zmq.Socket[bytes],
    seq: int,
    topic: str = "release.shop",
    env: dict[str, Any] | bytes | None = None,
) -> None:
    body = env if isinstance(env, bytes) else msgpack.packb(env or envelope(topic))
    sock.send_multipart([header(seq), topic.encode(), body])


def collect(
    sock: zmq.Socket[bytes], count: int, timeout: float = 10.0
) -> dict[int | None, dict[str, Any]]:
    """Read replies until ``count`` fates are known: seq -> {"code": "accepted"|code, ...}."""
    fates: dict[int | None, dict[str, Any]] = {}
    unnumbered = 0
    deadline = time.monotonic() + timeout
    while len(fates) - (None in fates) + unnumbered < count:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000)):
            raise AssertionError(
                f"got {len(fates) - (None in fates) + unnumbered} of {count} replies"
            )
        reply = msgpack.unpackb(sock.recv())
        for lo, hi in reply["acc"]:
            for seq in range(lo, hi + 1):
                assert seq not in fates, f"seq {seq} answered twice"
                fates[seq] = {"code": "accepted"}
        for rej in reply["rej"]:
            if rej["seq"] is None:
                unnumbered += 1
                fates.setdefault(None, rej)
            else:
                assert rej["seq"] not in fates, f"seq {rej['seq']} answered twice"
                fates[rej["seq"]] = rej
    return fates


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def subscriber(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, *prefixes: str
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    for prefix in prefixes:
        sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    sock.connect(endpoint)
    return sock


def wait_subscribed(
    ctx: zmq.Context[zmq.Socket[bytes]],
    pub_endpoint: str,
    sub: zmq.Socket[bytes],
    topic: str,
    timeout: float = 5.0,
) -> None:
    """Publish probes on ``topic`` until ``sub`` sees one (the slow-joiner handshake)."""
    probe = dealer(ctx, pub_endpoint)
    try:
        deadline = time.monotonic() + timeout
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            publish(probe, seq, topic, envelope(topic, id="probe"))
            if sub.poll(100):
                while sub.poll(50):
                    sub.recv_multipart()
                return
        raise AssertionError(f"subscription to {topic!r} never took effect")
    finally:
        probe.close()


def publish_batch(
    sock: zmq.Socket[bytes], seq: int, messages: list[tuple[str, dict[str, Any] | bytes]]
) -> list[bytes]:
    """One batch (docs/protocol.md §1): the header of ``seq``, then topic and envelope per
    message (numbered seq, seq + 1, ...). Returns the envelope bytes sent, in order."""
    bodies = [env if isinstance(env, bytes) else msgpack.packb(env) for _, env in messages]
    frames = [header(seq)]
    for (topic, _), body in zip(messages, bodies, strict=True):
        frames += [topic.encode(), body]
    sock.send_multipart(frames)
    return bodies


def replies(sock: zmq.Socket[bytes], timeout: float = 10.0) -> dict[str, Any]:
    """The next reply map, raw."""
    if not sock.poll(int(timeout * 1000)):
        raise AssertionError("no reply")
    reply: dict[str, Any] = msgpack.unpackb(sock.recv())
    return reply
