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
# The 1 KiB row: the same release, with the environment a real app carries (the envelope
# is KIB bytes exactly, see ``test_the_1k_payload_makes_a_1_kib_envelope``).
KIB = 1024
_ENV_1K = {f"APP_SETTING_{i:02d}": "x" * (52 if i else 44) for i in range(12)}
DATA_1K: dict[str, Any] = dict(DATA, env={"RACK_ENV": "production", **_ENV_1K})
PAYLOADS: dict[str, dict[str, Any]] = {"small": DATA, "1k": DATA_1K}
TOPIC = "release.shop"  # the single topic of most workloads
MANY_PREFIX = "release.t."  # the distinct-topics workload: release.t.000000 ...
WARMUP_PREFIX = "release.warmup."  # per-publisher handshake topics, never counted

_packb = msgpack.packb
_time_ns = time.time_ns


def payload(name: str | None) -> dict[str, Any]:
    """The ``data`` of a spec's ``payload`` ("small", the default, or "1k")."""
    return PAYLOADS[name or "small"]


def warmup_topic(index: int) -> str:
    return f"{WARMUP_PREFIX}{index}"


def topics(n_topics: int) -> list[str]:
    """The topics a publisher cycles through: one, or ``n_topics`` distinct ones."""
    if n_topics <= 1:
        return [TOPIC]
    return [f"{MANY_PREFIX}{i:06d}" for i in range(n_topics)]


class Envelopes:
    """Encodes release v2 envelopes with unique ids (a random prefix, then a counter)."""

    __slots__ = ("count", "data", "prefix", "publisher")

    def __init__(self, publisher: str = PUBLISHER, data: dict[str, Any] = DATA) -> None:
        self.prefix = os.urandom(8).hex()
        self.count = 0
        self.publisher = publisher
        self.data = data

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
                "data": self.data if data is None else data,
            }
        )
        return body


def stamp(body: bytes) -> int:
    """The envelope's ``ts`` (ns since the epoch)."""
    ts: int = msgpack.unpackb(body)["ts"]
    return ts
