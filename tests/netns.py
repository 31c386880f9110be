"""Brokers on separate "hosts": Linux network namespaces joined to the test by veth links.

Topology (one private /30 per broker, inside a /24 of 10.203.0.0/16 picked per run and checked
unused on this machine)::

    test process (root namespace)                      broker namespace i
    bn<token>h<i>  10.203.R.(4i+2)/30  <--- veth --->  eth0  10.203.R.(4i+1)/30, lo up

Nothing is routed: the only routes added are the kernel's connected /30s, so test traffic can
reach only the namespaces this module creates, never a real interface.

A cut puts the ``blackhole`` queueing discipline on both ends of the veth: every frame (ARP
included) is dropped silently in both directions while carrier, addresses and routes stay.
That is what a pulled cable or a dead switch between two hosts looks like to their TCP stacks:
no RST, no ICMP, no local error; senders learn only by timeouts. ``ip link set down`` would be
worse: it deletes the connected route, so senders get an immediate ENETUNREACH (or, in the root
namespace, fall back to the default route and leak onto the real network).

Every name carries the creating pid (namespaces ``busdnet-<pid>-<token>-b<i>``), so a run
removes the leftovers of crashed runs whose pid is gone. A namespace holds its veth end, and a
veth pair dies with either end, so deleting the namespace removes everything a broker used.

Use ``with brokers_in_namespaces(tmp_path, 3) as b:`` (busd ``i`` is ``b.procs[i]``, its
endpoints on its namespace address), then ``b.net.cut(i)`` / ``b.net.restore(i)``; or
``Network(n)`` alone and ``net.busd(i, root)``. Tests skip where this cannot work: not root,
no iproute2, ``ip netns add`` refused (no CAP_SYS_ADMIN), no blackhole qdisc.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
from conftest import BusdProcess

__all__ = [
    "IP",
    "Brokers",
    "Link",
    "NetnsBusd",
    "Network",
    "brokers_in_namespaces",
    "leftover_namespaces",
    "require_netns",
    "run",
    "start_all",
]

IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"
SPACE = ipaddress.IPv4Network("10.203.0.0/16")
NS_PREFIX = "busdnet"
_NS_NAME = re.compile(rf"^{NS_PREFIX}-(\d+)-[0-9a-f]{{6}}-b\d+$")
_LOCK = Path(tempfile.gettempdir()) / "busd-netns.lock"
# Ports inside a broker's namespace: each namespace has a port space of its own.
PUB_PORT, SUB_PORT, METRICS_PORT = 7401, 7402, 7403


class NetnsError(RuntimeError):
    """An ip/tc command failed."""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done


@dataclass
class Link:
    """One broker's namespace and the veth joining it to the test process."""

    index: int
    ns: str
    host_if: str  # veth end in the test's namespace
    ns_if: str  # veth end in the broker's namespace
    host_addr: str
    ns_addr: str  # the broker's address: bind here, connect here
    is_cut: bool = False


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (a killed run nobody reaped yet) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _namespaces() -> list[str]:
    out = run(IP, "-j", "netns", "list", check=False).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def leftover_namespaces() -> list[str]:
    """Our namespaces whose creating process is gone."""
    found = []
    for name in _namespaces():
        m = _NS_NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            found.append(name)
    return found


def _delete_namespace(name: str) -> None:
    """Kill what still runs inside (a busd a crashed run left), then delete the namespace."""
    for pid in run(IP, "netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    run(IP, "netns", "delete", name, check=False)


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address in or a route to (defaults aside)."""
    used: list[ipaddress.IPv4Network] = []
    for route in json.loads(run(IP, "-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            used.append(ipaddress.IPv4Network(dst, strict=False))
    for link in json.loads(run(IP, "-j", "-4", "addr", "show").stdout or "[]"):
        for addr in link.get("addr_info", []):
            used.append(ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}").network)
    return used


def _free_block() -> ipaddress.IPv4Network:
    used = _networks_in_use()
    blocks = list(SPACE.subnets(new_prefix=24))
    for _ in range(64):
        block = secrets.choice(blocks)
        if not any(block.overlaps(net) for net in used):
            return block
    pytest.skip(f"no unused /24 in {SPACE}: this machine already uses that range")


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """Concurrent runs must not pick the same /24 between checking and assigning it."""
    with open(_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def require_netns() -> None:
    """Skip (with the reason) where namespaces cannot be made: not root, no iproute2."""
    if os.geteuid() != 0:
        pytest.skip("network namespace tests need root")
    for tool in (IP, TC):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{Path(tool).name} (iproute2) is not installed")


class Network:
    """``count`` broker namespaces, each linked to the test process; use as a context manager.

    Leftovers of crashed runs are removed on entry; everything made is removed on exit, even
    when setup or the test failed. Skips the test where namespaces cannot be created.
    """

    def __init__(self, count: int) -> None:
        self.token = secrets.token_hex(3)
        self.links: list[Link] = []
        self._count = count

    def __enter__(self) -> Network:
        require_netns()
        for name in leftover_namespaces():
            _delete_namespace(name)
        try:
            with _allocation_lock():
                block = _free_block()
                for i in range(self._count):
                    self._make_link(i, block)
            self._check_blackhole()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _make_link(self, i: int, block: ipaddress.IPv4Network) -> None:
        ns = f"{NS_PREFIX}-{os.getpid()}-{self.token}-b{i}"
        net = list(block.subnets(new_prefix=30))[i]
        link = Link(i, ns, f"bn{self.token}h{i}", "eth0", str(net[2]), str(net[1]))
        made = run(IP, "netns", "add", ns, check=False)
        if made.returncode != 0:
            if i == 0:  # e.g. a container without CAP_SYS_ADMIN
                pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
            raise NetnsError(f"ip netns add {ns}: {made.stderr.strip()}")
        self.links.append(link)  # from here on, close() removes it
        # The peer is born inside the namespace, so no half-made pair is left in ours.
        run(
            IP, "link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if, "netns", ns
        )
        ends: list[tuple[tuple[str, ...], str, str]] = [
            ((), link.host_if, link.host_addr),
            (("-n", ns), link.ns_if, link.ns_addr),
        ]
        for where, dev, addr in ends:
            # No IPv6 link-local address: keeps router solicitations and DAD off the link.
            run(IP, *where, "link", "set", "dev", dev, "addrgenmode", "none")
            run(IP, *where, "addr", "add", f"{addr}/30", "dev", dev)
            run(IP, *where, "link", "set", "dev", dev, "up")
        run(IP, "-n", ns, "link", "set", "dev", "lo", "up")

    def _check_blackhole(self) -> None:
        first = self.links[0]
        tried = run(TC, "qdisc", "add", "dev", first.host_if, "root", "blackhole", check=False)
        if tried.returncode != 0:
            pytest.skip(f"tc cannot add a blackhole qdisc (cuts need it): {tried.stderr.strip()}")
        run(TC, "qdisc", "del", "dev", first.host_if, "root")

    def close(self) -> None:
        for link in self.links:
            # Deleting our end first is synchronous; a namespace's links go asynchronously.
            run(IP, "link", "delete", "dev", link.host_if, check=False)
            _delete_namespace(link.ns)
        self.links.clear()

    # -- faults -----------------------------------------------------------------------------

    def cut(self, i: int) -> None:
        """Drop every frame on broker ``i``'s link, both ways, silently (see module doc)."""
        link = self.links[i]
        run(TC, "qdisc", "replace", "dev", link.host_if, "root", "blackhole")
        run(TC, "-n", link.ns, "qdisc", "replace", "dev", link.ns_if, "root", "blackhole")
        link.is_cut = True

    def restore(self, i: int) -> None:
        """Undo ``cut``: frames flow again; TCP retransmits what was lost meanwhile."""
        link = self.links[i]
        run(TC, "qdisc", "del", "dev", link.host_if, "root", check=False)
        run(TC, "-n", link.ns, "qdisc", "del", "dev", link.ns_if, "root", check=False)
        link.is_cut = False

    def restore_all(self) -> None:
        for link in self.links:
            if link.is_cut:
                self.restore(link.index)

    def namespaces(self) -> list[str]:
        return [link.ns for link in self.links]

    def busd(self, i: int, root: Path, extra_args: tuple[str, ...] = ()) -> NetnsBusd:
        """A (not yet started) busd inside broker ``i``'s namespace."""
        return NetnsBusd(root, self.links[i], extra_args=extra_args)


class NetnsBusd(BusdProcess):
    """A real busd run with ``ip netns exec`` in a broker namespace, bound on its address.

    ``ip netns exec`` execs busd in place, so ``proc`` is busd itself and signals reach it.
    Its metrics (and /readyz) listen on the namespace address too, across the link.
    """

    def __init__(
        self, root: Path, link: Link, loop: str = "uvloop", extra_args: tuple[str, ...] = ()
    ) -> None:
        super().__init__(root, loop, extra_args)
        self.link = link
        self.host = link.ns_addr
        self._addr = {
            "pub": f"tcp://{link.ns_addr}:{PUB_PORT}",
            "sub": f"tcp://{link.ns_addr}:{SUB_PORT}",
            "metrics": f"{link.ns_addr}:{METRICS_PORT}",
        }

    def argv(self) -> list[str]:
        # Namespaces this test made, joined by veth links: no other host can reach them, so
        # busd may listen there without keys (--insecure says so explicitly).
        return [IP, "netns", "exec", self.link.ns, *super().argv(), "--insecure"]


def start_all(procs: list[NetnsBusd], timeout: float = 10.0) -> None:
    """Start brokers side by side (each waits for its own ``ready`` line)."""
    with ThreadPoolExecutor(len(procs)) as pool:
        for result in [pool.submit(p.start, timeout) for p in procs]:
            result.result()


@dataclass
class Brokers:
    """Running brokers, broker ``i`` in ``net.links[i]``'s namespace."""

    net: Network
    procs: list[NetnsBusd]

    @property
    def pub_endpoints(self) -> list[str]:
        return [b.pub_endpoint for b in self.procs]

    @property
    def sub_endpoints(self) -> list[str]:
        return [b.sub_endpoint for b in self.procs]


@contextlib.contextmanager
def brokers_in_namespaces(
    root: Path, count: int, extra_args: tuple[str, ...] = ()
) -> Iterator[Brokers]:
    """``count`` running busd, one per namespace (files under ``root/b<i>``); on exit the
    links are restored, the brokers stopped and the namespaces removed, whatever happened."""
    with Network(count) as net:
        procs = [net.busd(i, root / f"b{i}", extra_args) for i in range(count)]
        try:
            start_all(procs)
            yield Brokers(net, procs)
        finally:
            net.restore_all()
            for proc in procs:
                proc.stop()
