"""A raw state client for tests: zmq sockets and busd_protocol only, following the client rule
of docs/protocol.md §3.2 step by step (what a client in another language would write).

``RawStateView`` subscribes its SUB to the prefix, then to the sync marker, asks for the
snapshot, buffers live messages meanwhile, applies the parts, then the buffered messages newer
than the end frame's positions, then live messages as they come. It keeps every message id it
applied, so a test can prove nothing was applied twice.
"""

from __future__ import annotations

import time
from typing import Any

import zmq

from busd_protocol.messages import decode_envelope
from busd_protocol.schemas.state import StateRule
from busd_protocol.snapshots import (
    End,
    Failure,
    Part,
    decode_reply,
    encode_request,
    new_sync_token,
    sync_subscription,
)
from busd_protocol.stamps import read_stamp

Key = tuple[str, tuple[Any, ...]]


def request(
    ctx: zmq.Context[zmq.Socket[bytes]],
    endpoint: str,
    prefix: str,
    *,
    sync: str | None = None,
    req: int = 1,
    timeout: float = 10.0,
    setup: Any = None,
) -> tuple[list[Part], End | Failure]:
    """One snapshot over a fresh DEALER: its parts and its end (or failure)."""
    dealer = ctx.socket(zmq.DEALER)
    if setup is not None:
        setup(dealer)
    dealer.connect(endpoint)
    try:
        dealer.send(encode_request(req, prefix, sync))
        return read_snapshot(dealer, timeout)
    finally:
        dealer.close(linger=0)


def read_snapshot(dealer: zmq.Socket[bytes], timeout: float) -> tuple[list[Part], End | Failure]:
    parts: list[Part] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not dealer.poll(int(left * 1000)):
            raise AssertionError(f"no snapshot reply within {timeout}s ({len(parts)} parts)")
        reply = decode_reply(dealer.recv_multipart())
        if isinstance(reply, Part):
            parts.append(reply)
        else:
            return parts, reply


def key_of(schema: str, data: dict[str, Any], rule: StateRule) -> Key:
    return schema, tuple(data[name] for name in rule.key)


class RawStateView:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        sub_endpoint: str,
        state_endpoint: str,
        prefix: str,
    ) -> None:
        self.prefix = prefix
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 0)  # the test reads in bursts: never drop here
        self.sub.connect(sub_endpoint)
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.connect(state_endpoint)
        self.view: dict[Key, dict[str, Any]] = {}  # key -> envelope
        self.applied: list[str] = []  # every envelope id applied, in order
        self.rules: dict[str, StateRule] = {}
        self.end: End | None = None
        self.dropped = 0  # buffered live messages older than the cut
        self.live_applied = 0
        self.last_seq: dict[str, int] = {}  # topic -> the last stamp seq applied live

    def close(self) -> None:
        self.sub.close(linger=0)
        self.dealer.close(linger=0)

    def start(self, timeout: float = 30.0, live_first: bool = False) -> End:
        """Subscribe, sync, ask, buffer, apply: returns the end frame. ``live_first``: ask
        only once live messages arrive (so busd has seen the token and the cut falls after
        messages this client also receives live: they must be dropped)."""
        token = new_sync_token()
        self.sub.setsockopt(zmq.SUBSCRIBE, self.prefix.encode())
        self.sub.setsockopt(zmq.SUBSCRIBE, sync_subscription(token))
        buffered: list[list[bytes]] = []
        if live_first:
            assert self.sub.poll(int(timeout * 1000)), "no live message"
            for _ in range(100):
                buffered.append(self.sub.recv_multipart())
        self.dealer.send(encode_request(7, self.prefix, token))
        parts: list[Part] = []
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.dealer, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        end: End | Failure | None = None
        while end is None:
            if time.monotonic() > deadline:
                raise AssertionError("snapshot not finished in time")
            ready = dict(poller.poll(100))
            while self.sub in ready:
                try:
                    buffered.append(self.sub.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
            if self.dealer in ready:
                reply = decode_reply(self.dealer.recv_multipart())
                if isinstance(reply, Part):
                    parts.append(reply)
                else:
                    end = reply
        if isinstance(end, Failure):
            raise AssertionError(f"snapshot failed: {end}")
        self.end, self.rules = end, end.rules
        self.sub.setsockopt(zmq.UNSUBSCRIBE, sync_subscription(token))
        for part in parts:
            for entry in part.entries:
                self._apply(entry.envelope)
        for frames in buffered:
            topic, stamp = frames[0].decode(), read_stamp(frames[2])
            assert stamp is not None and stamp[0] == end.epoch
            if stamp[1] <= end.topics.get(topic, 0):
                self.dropped += 1
                continue
            self._live(topic, frames[1], stamp[1])
        return end

    def pump(self, timeout: float = 0.05) -> int:
        """Apply the live messages that come within ``timeout``; returns how many."""
        n = 0
        if not self.sub.poll(int(timeout * 1000)):
            return 0
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            stamp = read_stamp(frames[2])
            assert self.end is not None and stamp is not None and stamp[0] == self.end.epoch
            self._live(frames[0].decode(), frames[1], stamp[1])
            n += 1

    def _live(self, topic: str, envelope: bytes, seq: int) -> None:
        previous = self.last_seq.get(topic)
        if previous is None:
            assert self.end is not None
            previous = self.end.topics.get(topic, 0)
        assert seq == previous + 1, f"{topic}: seq {seq} after {previous}: a gap or a repeat"
        self.last_seq[topic] = seq
        self.live_applied += 1
        self._apply(envelope)

    def _apply(self, envelope: bytes) -> None:
        env = decode_envelope(envelope)
        assert type(env) is dict
        rule = self.rules.get(env["schema"])
        if rule is None:
            return
        key = key_of(env["schema"], env["data"], rule)
        self.applied.append(env["id"])
        if rule.is_end(env["data"]):
            self.view.pop(key, None)
        else:
            self.view[key] = env
