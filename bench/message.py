"""The one message every system carries, and the topic names every workload uses.

Every publisher, whatever the system, encodes a fresh envelope per message (new id, new
``ts``) the way a real publisher would, so the per-message client cost is the same for all.
``ts`` is the wall clock in ns (the protocol's meaning, and what busd_client stamps);
CLOCK_REALTIME is system-wide like CLOCK_MONOTONIC, so one-way latency on one machine is
``time_ns() at receive - ts``. Cross-process run windows use ``monotonic_ns``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack

SCHEMA = "release"
VERSION = 2
PUBLISHER = "bench"
# Refused by busd's rate check when rates are on (the bench writes this key's file as 0).
PROBE_PUBLISHER = "bench-probe"
DATA: dict[str, Any] = {
    "slug": "https://apps.example/shop/releases/42",
    "cmd": "bin/web",
    "env": {"RACK_ENV": "production"},
    "flag": "extra_cpu",
}
TOPIC = "release.shop"  # the single topic of most workloads
MANY_PREFIX = "release.t."  # the distinct-topics workload: release.t.000000 ...
WARMUP_PREFIX = "release.warmup."  # per-publisher handshake topics, never counted

_packb = msgpack.packb
_time_ns = time.time_ns


def warmup_topic(index: int) -> str:
    return f"{WARMUP_PREFIX}{index}"


def topics(n_topics: int) -> list[str]:
    """The topics a publisher cycles through: one, or ``n_topics`` distinct ones."""
    if n_topics <= 1:
        return [TOPIC]
    return [f"{MANY_PREFIX}{i:06d}" for i in range(n_topics)]


class Envelopes:
    """Encodes release v2 envelopes with unique ids (a random prefix, then a counter)."""

    __slots__ = ("count", "prefix", "publisher")

    def __init__(self, publisher: str = PUBLISHER) -> None:
        self.prefix = os.urandom(8).hex()
        self.count = 0
        self.publisher = publisher

    def encode(self, topic: str, data: dict[str, Any] | None = None) -> bytes:
        self.count += 1
        body: bytes = _packb(
            {
                "topic": topic,
                "schema": SCHEMA,
                "version": VERSION,
                "id": f"{self.prefix}{self.count:010x}",
                "publisher": self.publisher,
                "ts": _time_ns(),
                "data": DATA if data is None else data,
            }
        )
        return body


def stamp(body: bytes) -> int:
    """The envelope's ``ts`` (ns since the epoch)."""
    ts: int = msgpack.unpackb(body)["ts"]
    return ts
