"""The systems under test, how each is started, and the worker specs for each.

``busd`` publishes with busd_client.Publisher (what our users run); ``busd-raw`` publishes
with a tight protocol-v1 DEALER loop (bench.drivers_zmq.BusdRawPub) against the same busd,
so the broker's own ceiling shows even when the client library is the bottleneck.
Subscribers to busd are stock SUB sockets, as a subscriber in any language would be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import curve, message, probe, servers
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
        System(
            "busd-curve",
            "busd with CURVE auth, busd_client.Publisher",
            "busd-client",
            "zmq-sub",
            "busd-curve",
        ),
    )
}
BUSD_SYSTEMS = ("busd", "busd-raw", "busd-curve")

SERVERS: dict[str, Callable[[], Server]] = {
    "zmq.proxy": servers.start_proxy,
    "nats": servers.start_nats,
    "redis": servers.start_redis,
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
    """Servers started on first use and kept for the whole session; stopped by ``close``.

    The shared busd runs with every check on, proven by ``bench.probe`` before its first
    use (``busd_flags``: more command-line flags for it; ``probe_timeout``: the probe's
    bound); one that cannot be proven is not used (``probe.Unproven``).
    """

    def __init__(self, busd_flags: tuple[str, ...] = (), probe_timeout: float = 0.0) -> None:
        self.running: dict[str, Server] = {}
        self.failed: dict[str, Unavailable] = {}
        self.busd_flags = busd_flags
        self.probe_timeout = probe_timeout or probe.PROBE_TIMEOUT
        self.curve_keys: curve.CurveKeys | None = None

    def _start(self, key: str) -> Server:
        opts = BusdOptions(extra=self.busd_flags)
        if key == "busd":
            return probe.start_checked("busd", opts, timeout=self.probe_timeout)
        if key == "busd-curve":  # the same busd with authentication on (issue 12's cost row)
            keys = self.curve_keys = self.curve_keys or curve.make_keys()
            server = probe.start_checked(key, opts, timeout=self.probe_timeout, keys=keys)
            server.client_env["publisher"] = keys.env(message.PUBLISHER)
            server.client_env["subscriber"] = keys.env(curve.SUBSCRIBER)
            server.notes["curve"] = True
            return server
        return SERVERS[key]()

    def get(self, key: str) -> Server | None:
        if not key:
            return None
        if key in self.failed:
            raise self.failed[key]
        server = self.running.get(key)
        if server is not None and not server.alive():
            self.failed[key] = Unavailable(f"{key} died during the run: {server.log_tail()}")
            server.stop()
            del self.running[key]
            raise self.failed[key]
        if server is None:
            try:
                server = self.running[key] = self._start(key)
            except Unavailable as exc:
                self.failed[key] = exc
                raise
        return server

    def close(self) -> None:
        for server in self.running.values():
            server.stop()
        self.running.clear()
        if self.curve_keys is not None:
            self.curve_keys.remove()


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
    env = server.client_env if server is not None else {}
    pubs = [
        {
            "driver": system.pub_driver,
            "endpoint": pub_endpoints[i],
            "index": i,
            "env": env.get("publisher", {}),
            **common,
        }
        for i in range(n_pubs)
    ]
    subs = [
        {
            "driver": system.sub_driver,
            "endpoints": sub_endpoints,
            "publishers": n_pubs,
            "env": env.get("subscriber", {}),
            **sub_common,
        }
        for _ in range(n_subs)
    ]
    for p in pubs:
        p.pop("latency", None)
    return pubs, subs


def start_busd_variant(
    name: str, opts: BusdOptions, expect: probe.Expect = probe.ALL_ON, timeout: float = 0.0
) -> Server:
    """A busd of its own whose checks are proven to be ``expect`` (else ``probe.Unproven``)."""
    return probe.start_checked(name, opts, expect, timeout or probe.PROBE_TIMEOUT)
