"""Shared fixtures: a real busd process on loopback ports it picks itself, and leak-checked
contexts."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, settings

# Property tests run on a loaded 2-core machine beside busd processes: how long Hypothesis
# takes to draw an example or run one says nothing about busd, so neither is a failure
# (the examples' count stays each test's own).
settings.register_profile("busd", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("busd")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOOPS = ("uvloop", "asyncio")


# Ports handed out by this process, never given twice. pytest loads this file as
# `tests.conftest` and the tests import it as `conftest`: the set lives in sys.modules so
# both copies share it.
_GIVEN: set[int] = sys.modules.setdefault(
    "_busd_test_ports", types.ModuleType("_busd_test_ports")
).__dict__.setdefault("ports", set())


def free_port() -> int:
    """A free port below the ephemeral range, so no client's outgoing connection (ZeroMQ
    reconnecting to a stopped busd, say) can be holding it when busd binds it. Never the
    same port twice in one run, in any worker: two brokers started together must not pick
    the same one before either binds it."""
    low, _ = _ephemeral_range()
    # Under pytest-xdist each worker draws from its own residue class of ports.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        port -= (port - worker) % workers
        if port in _GIVEN or port < 1024:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class BusdProcess:
    """A real busd on loopback, with its own var, rates and schemas directories.

    busd binds port 0 and the kernel picks its ports; they are read from its ``ready`` and
    ``metrics listening`` log lines and kept, so a restart binds the same ones (its clients
    reconnect). A test that needs an address before the first start (a pool file, say) reads
    one, and that port is reserved then with ``free_port``.
    """

    host = "127.0.0.1"

    def __init__(self, root: Path, loop: str = "uvloop", extra_args: tuple[str, ...] = ()):
        self.root = root
        self.loop = loop
        self.extra_args = list(extra_args)
        self.var_dir = root / "var"
        self.rates_dir = root / "rates"
        self.schemas_dir = root / "schemas"
        self.control = str(root / "run" / "control.sock")
        self.log_path = root / "busd.log"
        self.rates_dir.mkdir(parents=True, exist_ok=True)
        if not self.schemas_dir.exists():
            shutil.copytree(REPO / "schemas", self.schemas_dir)
        self._addr: dict[str, str] = {}  # role -> endpoint or address, once known or reserved
        self._starting = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}  # extra environment variables for the busd process
        self._log_offset = 0

    def _address(self, role: str) -> str:
        address = self._addr.get(role)
        if address is None:
            if self.proc is not None:
                raise AssertionError(f"busd reported no {role} address in its log")
            port = free_port()  # wanted before busd picked one: reserve one now
            prefix = "" if role == "metrics" else "tcp://"
            address = self._addr[role] = f"{prefix}{self.host}:{port}"
        return address

    @property
    def pub_endpoint(self) -> str:
        return self._address("pub")

    @pub_endpoint.setter
    def pub_endpoint(self, endpoint: str) -> None:
        self._addr["pub"] = endpoint

    @property
    def sub_endpoint(self) -> str:
        return self._address("sub")

    @sub_endpoint.setter
    def sub_endpoint(self, endpoint: str) -> None:
        self._addr["sub"] = endpoint

    @property
    def state_endpoint(self) -> str:
        return self._address("state")

    @state_endpoint.setter
    def state_endpoint(self, endpoint: str) -> None:
        self._addr["state"] = endpoint

    @property
    def metrics(self) -> str:
        return self._address("metrics")

    @metrics.setter
    def metrics(self, address: str) -> None:
        self._addr["metrics"] = address

    @property
    def pub_port(self) -> int:
        return int(self.pub_endpoint.rsplit(":", 1)[1])

    @property
    def sub_port(self) -> int:
        return int(self.sub_endpoint.rsplit(":", 1)[1])

    @property
    def metrics_port(self) -> int:
        return int(self.metrics.rsplit(":", 1)[1])

    def argv(self) -> list[str]:
        def address(role: str, any_port: str) -> str:
            # Inside start() busd may pick a port; argv() wanted by a test names one.
            return self._addr.get(role, any_port) if self._starting else self._address(role)

        tcp0 = f"tcp://{self.host}:0"
        return [
            str(BIN / "busd"),
            "--pub-endpoint",
            address("pub", tcp0),
            "--sub-endpoint",
            address("sub", tcp0),
            "--state-endpoint",
            address("state", tcp0),
            "--control",
            self.control,
            "--rates-dir",
            str(self.rates_dir),
            "--schemas-dir",
            str(self.schemas_dir),
            "--metrics",
            address("metrics", f"{self.host}:0"),
            "--var-dir",
            str(self.var_dir),
            "--loop",
            self.loop,
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--warmup",
            "0",  # most tests publish at once; pool tests pass their own
            *self.extra_args,
        ]

    def start(self, timeout: float = 10.0) -> float:
        """Start and wait for the ``ready`` log line; returns seconds taken."""
        started = time.monotonic()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._starting = True
        try:
            argv = self.argv()
        finally:
            self._starting = False
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=log,
                cwd=self.root,
                env={**os.environ, **self.env} if self.env else None,
            )
        ready = self.wait_log("ready", timeout=timeout)
        for role in ("pub", "sub", "state"):
            self._addr[role] = ready[f"{role}_endpoint"]
        listening = [line for line in self.logs() if line.get("event") == "metrics listening"]
        if listening:
            self._addr["metrics"] = listening[-1]["address"]
        return time.monotonic() - started

    def logs(self, since_start: bool = True) -> list[dict[str, Any]]:
        data = self.log_path.read_bytes()[self._log_offset if since_start else 0 :]
        lines = []
        for raw in data.splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"event": "<unparsed>", "text": raw.decode(errors="replace")})
        return lines

    def wait_log(self, event: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None and event != "stopped":
                raise AssertionError(
                    f"busd exited {self.proc.returncode} before {event!r}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            for line in self.logs():
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            return None

        result: dict[str, Any] = wait_for(found, timeout, what=f"log event {event!r}")
        return result

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> float:
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def busd_factory(tmp_path: Path) -> Iterator[Callable[..., BusdProcess]]:
    """Make (and start) busd processes; all are killed at teardown."""
    made: list[BusdProcess] = []

    def make(
        loop: str = "uvloop",
        extra_args: tuple[str, ...] = (),
        start: bool = True,
        name: str = "busd",
    ) -> BusdProcess:
        proc = BusdProcess(tmp_path / name, loop, extra_args)
        made.append(proc)
        if start:
            proc.start()
        return proc

    yield make
    for proc in made:
        proc.stop()


@pytest.fixture
def busd(busd_factory: Callable[..., BusdProcess]) -> BusdProcess:
    """A running busd on uvloop (the production loop)."""
    return busd_factory()


@pytest.fixture(params=LOOPS)
def busd_each_loop(
    request: pytest.FixtureRequest, busd_factory: Callable[..., BusdProcess]
) -> BusdProcess:
    """A running busd, once on uvloop and once on asyncio."""
    return busd_factory(loop=request.param)


class TrackedContext(zmq.Context):  # type: ignore[type-arg]
    """A context that remembers its sockets, so a test that leaks one fails."""

    made: list[zmq.Socket[bytes]]  # class-level annotation lets pyzmq accept the attribute

    def __init__(self) -> None:
        super().__init__()
        self.made = []

    def socket(self, socket_type: int, **kwargs: Any) -> zmq.Socket[bytes]:  # type: ignore[override]
        sock: zmq.Socket[bytes] = super().socket(socket_type, **kwargs)
        sock.setsockopt(zmq.LINGER, 0)
        self.made.append(sock)
        return sock


@pytest.fixture
def zctx() -> Iterator[TrackedContext]:
    """A ZeroMQ context for raw test peers; fails the test if a socket is left open."""
    ctx = TrackedContext()
    yield ctx
    leaked = [s for s in ctx.made if not s.closed]
    for s in leaked:
        s.close(linger=0)
    ctx.term()
    assert not leaked, f"{len(leaked)} socket(s) left open by the test"


def pytest_report_header() -> str:
    return f"busd under test: {BIN / 'busd'} (installed), pid {os.getpid()}"


def decide(admission: Any, topic: str, env: dict[str, Any], now: float = 0.0) -> Any:
    """``admission.decide`` on the frames a publisher would send for ``topic`` and ``env``."""
    return admission.decide(topic.encode(), msgpack.packb(env), now)
