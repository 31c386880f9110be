"""The systems under test, how each is started, and the worker specs for each.

``busd`` publishes with busd_client.Publisher (what our users run); ``busd-raw`` publishes
with a tight protocol-v1 DEALER loop (bench.drivers_zmq.BusdRawPub) against the same busd,
so the broker's own ceiling shows even when the client library is the bottleneck.
Subscribers to busd are stock SUB sockets, as a subscriber in any language would be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from bench import message, servers
from bench.servers import BusdOptions, Server, Unavailable


@dataclass(frozen=True)
class System:
    name: str
    label: str
    pub_driver: str
    sub_driver: str
    server: str  # key into ``SERVERS``; "" for none (PUB binds, SUB connects)


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System("pyzmq", "pyzmq PUB → SUB, no broker", "zmq-bind", "zmq-sub", ""),
        System("zmq.proxy", "zmq.proxy (XSUB/XPUB in C)", "zmq-connect", "zmq-sub", "zmq.proxy"),
        System("nats", "nats-server + nats-py", "nats", "nats-sub", "nats"),
        System("redis", "redis-server pub/sub + redis-py", "redis", "redis-sub", "redis"),
        System("busd", "busd, busd_client.Publisher", "busd-client", "zmq-sub", "busd"),
        System("busd-raw", "busd, raw protocol-v1 publisher", "busd-raw", "zmq-sub", "busd"),
    )
}
BUSD_SYSTEMS = ("busd", "busd-raw")

SERVERS: dict[str, Callable[[], Server]] = {
    "zmq.proxy": servers.start_proxy,
    "nats": servers.start_nats,
    "redis": servers.start_redis,
    "busd": servers.start_busd,
}


def python_client_missing(system: System) -> str | None:
    """Why the system's Python client cannot be imported here, or None."""
    module = {"nats": "nats", "redis": "redis", "busd-client": "busd_client"}.get(system.pub_driver)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        pip = {"nats": "nats-py"}.get(module, module)
        return f"Python package {pip!r} is not installed (pip install {pip})"
    return None


class ServerPool:
    """Servers started on first use and kept for the whole session; stopped by ``close``."""

    def __init__(self) -> None:
        self.running: dict[str, Server] = {}
        self.failed: dict[str, str] = {}

    def get(self, key: str) -> Server | None:
        if not key:
            return None
        if key in self.failed:
            raise Unavailable(self.failed[key])
        server = self.running.get(key)
        if server is not None and not server.alive():
            self.failed[key] = f"{key} died during the run: {server.log_tail()}"
            server.stop()
            del self.running[key]
            raise Unavailable(self.failed[key])
        if server is None:
            try:
                server = self.running[key] = SERVERS[key]()
            except Unavailable as exc:
                self.failed[key] = str(exc)
                raise
            if key == "busd":
                server.notes["checks"] = probe_busd(server)
        return server

    def close(self) -> None:
        for server in self.running.values():
            server.stop()
        self.running.clear()


def specs(
    system: System, server: Server | None, n_pubs: int, n_subs: int, **common: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Worker specs for ``n_pubs`` publishers and ``n_subs`` subscribers of ``system``."""
    if server is None:  # no broker: every publisher binds, every subscriber connects to all
        pub_endpoints = [f"tcp://127.0.0.1:{servers.free_port()}" for _ in range(n_pubs)]
        sub_endpoints = pub_endpoints
    else:
        pub_endpoints = [server.pub_endpoint] * n_pubs
        sub_endpoints = [server.sub_endpoint]
    sub_common = {k: v for k, v in common.items() if k in ("topics", "latency", "deadline", "idle")}
    pubs = [
        {"driver": system.pub_driver, "endpoint": pub_endpoints[i], "index": i, **common}
        for i in range(n_pubs)
    ]
    subs = [
        {
            "driver": system.sub_driver,
            "endpoints": sub_endpoints,
            "publishers": n_pubs,
            **sub_common,
        }
        for _ in range(n_subs)
    ]
    for p in pubs:
        p.pop("latency", None)
    return pubs, subs


def probe_busd(server: Server, timeout: float = 1.0) -> dict[str, Any]:
    """Whether this busd really checks: an invalid payload must come back ``invalid`` and a
    message from the disabled publisher key ``disabled``. Retried for ``timeout`` seconds
    (the rates directory is read by a watcher shortly after start)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.pub_endpoint)
    codes: dict[str, str] = {}
    seq = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            bad = dict(message.DATA, env={"RACK_ENV": 5})
            cases = {
                "valid": message.Envelopes().encode(message.TOPIC),
                "schema": message.Envelopes().encode(message.TOPIC, bad),
                "rate": message.Envelopes(message.PROBE_PUBLISHER).encode(message.TOPIC),
            }
            by_seq: dict[int, str] = {}
            for case, body in cases.items():
                seq += 1
                by_seq[seq] = case
                sock.send_multipart(
                    [b"B\x01" + seq.to_bytes(8, "big"), message.TOPIC.encode(), body]
                )
            while by_seq and sock.poll(1000):
                reply = msgpack.unpackb(sock.recv())
                for lo, hi in reply["acc"]:
                    for s in range(lo, hi + 1):
                        if s in by_seq:
                            codes[by_seq.pop(s)] = "accepted"
                for rej in reply["rej"]:
                    if rej["seq"] in by_seq:
                        codes[by_seq.pop(rej["seq"])] = rej["code"]
            if codes.get("schema") == "invalid" and codes.get("rate") == "disabled":
                break
            time.sleep(0.2)
    finally:
        sock.close(linger=0)
        ctx.term()
    return {
        "schema_checks": codes.get("schema") == "invalid",
        "rate_checks": codes.get("rate") == "disabled",
        "valid_accepted": codes.get("valid") == "accepted",
        "codes": codes,
    }


def start_busd_variant(name: str, opts: BusdOptions) -> Server:
    server = servers.start_busd(opts, name=name)
    server.notes["checks"] = probe_busd(server)
    return server
