"""Starting and stopping the servers under test on free loopback ports.

Each ``start_*`` returns a ``Server`` (its process, endpoints and log file) or raises
``Unavailable`` saying why, so the harness can skip that system and say so.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START_TIMEOUT = 10.0
# busd's rates directory for the benchmark: a real bucket on every message that can never
# run dry, and a disabled key the check probe publishes under (see ``bench.probe``).
GENEROUS_PUBLISH = "1000000000 1000000000\n"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the harness dies (even by SIGKILL), so no
    server or worker outlives an interrupted benchmark. Linux only; harmless elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Unavailable(RuntimeError):
    """A system cannot run here (not installed, would not start)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"exited with status {proc.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise Unavailable(f"port {port} not open after {timeout:g} s")


def wait_log(server: Server, needle: str, timeout: float = START_TIMEOUT) -> None:
    """Wait until the server's log holds ``needle``."""
    deadline = time.monotonic() + timeout
    log = server.workdir / "server.log"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise Unavailable(f"exited with status {server.proc.returncode} at start")
        with contextlib.suppress(OSError):
            if needle in log.read_text(errors="replace"):
                return
        time.sleep(0.02)
    raise Unavailable(f"no {needle!r} in its log after {timeout:g} s")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    pub_endpoint: str
    sub_endpoint: str
    workdir: Path
    notes: dict[str, Any] = field(default_factory=dict)
    # Extra environment for the workers that use this server, by role ("publisher",
    # "subscriber"): the CURVE keys of a busd with authentication on.
    client_env: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.workdir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _spawn(
    name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - owned by the child from here
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads here
        )
    except OSError as exc:
        raise Unavailable(f"{name}: cannot run {argv[0]}: {exc.strerror}") from None
    finally:
        log.close()


def _workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))


def _started(
    name: str, argv: list[str], port: int, *, pub: str, sub: str, env: dict[str, str] | None = None
) -> Server:
    workdir = _workdir(name.replace(".", "-"))
    proc = _spawn(name, argv, workdir, env)
    server = Server(name, proc, pub, sub, workdir)
    try:
        wait_port(port, proc)
    except Unavailable as exc:
        tail = server.log_tail()
        server.stop()
        raise Unavailable(f"{name}: {exc}{': ' + tail if tail else ''}") from None
    return server


def start_proxy() -> Server:
    """zmq.proxy(XSUB, XPUB) in C, in its own process (bench.proxy)."""
    xsub, xpub = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.proxy",
        f"tcp://127.0.0.1:{xsub}",
        f"tcp://127.0.0.1:{xpub}",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = _started(
        "zmq.proxy",
        argv,
        xpub,
        pub=f"tcp://127.0.0.1:{xsub}",
        sub=f"tcp://127.0.0.1:{xpub}",
        env=env,
    )
    wait_port(xsub, server.proc)
    return server


def start_nats() -> Server:
    exe = shutil.which("nats-server")
    if exe is None:
        raise Unavailable("nats-server is not installed (apt-get install nats-server)")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = _started("nats", [exe, "-a", "127.0.0.1", "-p", str(port)], port, pub=url, sub=url)
    server.notes["version"] = _version([exe, "--version"])
    return server


def start_redis() -> Server:
    exe = shutil.which("redis-server")
    if exe is None:
        raise Unavailable("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    argv = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--loglevel",
        "warning",
    ]
    server = _started("redis", argv, port, pub=endpoint, sub=endpoint)
    server.notes["version"] = _version([exe, "--version"])
    return server


@dataclass(frozen=True)
class BusdOptions:
    """One busd configuration. ``rates``: write the generous ``publish`` file (a bucket on
    every message); ``extra``: more command-line flags (e.g. a switch turning a check off)."""

    rates: bool = True
    schemas_dir: Path = REPO / "schemas"
    extra: tuple[str, ...] = ()


def busd_executable() -> Path:
    exe = BIN / "busd"
    if not exe.exists():
        raise Unavailable(f"busd: {exe} not found (run `make install`)")
    return exe


def start_busd(opts: BusdOptions = BusdOptions(), name: str = "busd") -> Server:
    exe = busd_executable()
    workdir = _workdir(name)
    rates = workdir / "rates"
    rates.mkdir()
    if opts.rates:
        (rates / "publish").write_text(GENEROUS_PUBLISH)
        (rates / "publisher.bench-probe").write_text("0\n")
    pub, sub = free_port(), free_port()
    argv = [
        str(exe),
        "--pub-endpoint",
        f"tcp://127.0.0.1:{pub}",
        "--sub-endpoint",
        f"tcp://127.0.0.1:{sub}",
        "--state-endpoint",
        f"tcp://127.0.0.1:{free_port()}",
        "--metrics",
        "off",
        "--var-dir",
        str(workdir / "var"),
        "--rates-dir",
        str(rates),
        "--schemas-dir",
        str(opts.schemas_dir),
        "--control",
        str(workdir / "control.sock"),
        "--log-format",
        "json",
        "--log-level",
        "info",
        *opts.extra,
    ]
    proc = _spawn(name, argv, workdir)
    server = Server(name, proc, f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{sub}", workdir)
    try:
        wait_log(server, '"event":"ready"')  # not a TCP probe: busd counts those as failures
    except Unavailable as exc:
        tail = server.log_tail()
        server.stop()
        raise Unavailable(f"{name}: {exc}{': ' + tail if tail else ''}") from None
    server.notes["argv"] = argv[1:]
    return server


def busd_flags() -> str:
    """busd's --help text, to find which switches this busd has."""
    try:
        return subprocess.run(
            [str(busd_executable()), "--help"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout
    except (Unavailable, OSError, subprocess.TimeoutExpired):
        return ""


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB (empty when the process is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out
