"""A host of its own for a test: private mount and network namespaces in which /etc and /run
are the test's to write (an overlay over the real /etc, a fresh tmpfs on /run) and loopback
is private, so busd can run exactly as installed (deploy/README.md: /etc/busd/busd.toml,
/run/busd/control.sock, ports 7401-7403) without touching the real host or colliding with
anything else on it.

``with private_host(tmp_path) as host:`` then ``host.run(argv)`` / ``host.popen(argv)``
(``nsenter`` into both namespaces) and ``host.path("/etc/busd")`` (where that directory of
the private host is, seen from the test: writes there are the host's). The namespaces live
as long as a holder process (``sleep``); leaving the block kills it and everything started
inside, and nothing is left behind. Skips where it cannot work: not root, no
unshare/nsenter (util-linux), namespaces or overlayfs refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PrivateHost", "private_host"]

UNSHARE = shutil.which("unshare")
NSENTER = shutil.which("nsenter")
IP = shutil.which("ip") or "/usr/sbin/ip"


class PrivateHost:
    def __init__(self, root: Path, holder: subprocess.Popen[str], pid: int) -> None:
        self.root = root
        self.holder = holder
        self.pid = pid
        self.started: list[subprocess.Popen[Any]] = []

    def argv(self, argv: Sequence[str], cwd: str = "/") -> list[str]:
        assert NSENTER is not None
        return [NSENTER, "-t", str(self.pid), "-m", "-n", f"--wd={cwd}", "--", *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str = "/",
        env: dict[str, str] | None = None,
        timeout: float = 30,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(argv, cwd),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside (nsenter execs it: the process is ``argv`` itself)."""
        cwd = kwargs.pop("cwd", "/")
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(argv, cwd), **kwargs)
        self.started.append(proc)
        return proc

    def path(self, inside: str) -> Path:
        """The host's file ``inside`` (under /etc or /run) as the test reaches it."""
        for top in ("etc", "run"):
            if inside == f"/{top}" or inside.startswith(f"/{top}/"):
                return self.root / top / "upper" / inside.removeprefix(f"/{top}").lstrip("/")
        raise ValueError(f"{inside}: only /etc and /run are private")

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        if self.holder.poll() is None:
            self.holder.send_signal(signal.SIGKILL)
        self.holder.wait(10)
        for pipe in (self.holder.stdout, self.holder.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def private_host(root: Path) -> Iterator[PrivateHost]:
    if os.geteuid() != 0:
        pytest.skip("a private host (mount and network namespaces) needs root")
    if UNSHARE is None or NSENTER is None:
        pytest.skip("unshare/nsenter (util-linux) not installed")
    # /run's tmpfs gets an "upper" directory too, so path() reads the same for both.
    for top in ("etc", "run"):
        (root / top / "upper").mkdir(parents=True)
        (root / top / "work").mkdir()
    setup = (
        f"{IP} link set lo up"
        f" && mount -t overlay overlay -o lowerdir=/etc,upperdir={root}/etc/upper,"
        f"workdir={root}/etc/work /etc"
        f" && mount --bind {root}/run/upper /run"
        " && echo $$ && exec sleep 3600"
    )
    holder = subprocess.Popen(
        [UNSHARE, "--mount", "--net", "--propagation", "private", "--", "sh", "-c", setup],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stderr is not None
    line = holder.stdout.readline().strip()
    if not line.isdigit():
        holder.kill()
        holder.wait(10)
        why = holder.stderr.read().strip() or "no pid"
        holder.stdout.close()
        holder.stderr.close()
        pytest.skip(f"cannot make a private host: {why}")
    host = PrivateHost(root, holder, int(line))
    try:
        yield host
    finally:
        host.close()
