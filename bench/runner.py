"""Running one trial: start the worker processes, hand-shake, measure, collect results.

A trial is N publishers and M subscribers against one running server. Subscribers start
first and say ``ready`` once they have seen a warm-up message from every publisher (so
subscriptions have reached the server: ZeroMQ's slow joiner); then every publisher is told
``go`` at once. After all publishers reported, subscribers are told ``stop`` and end when
their input has been idle for a moment.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import die_with_parent

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 30.0
RESULT_GRACE = 60.0  # seconds past a publisher's own duration before giving up on it


class TrialError(RuntimeError):
    """A worker died, hung or said something unexpected; the message says which."""


class NoAnswer(TrialError):
    """A worker said nothing within the time allowed."""


class Worker:
    """One ``bench.worker`` process and a line reader on its stdout."""

    def __init__(self, role: str, spec: dict[str, Any]) -> None:
        self.role = role
        self.spec = spec
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in end()
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(spec.get("env", {}))  # e.g. BUSD_KEY / BUSD_SERVER_KEY (bench.curve)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            cwd=REPO,
            env=env,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the controller runs no threads
        )
        self._buf = b""

    def tell(self, command: str) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(command.encode() + b"\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass

    def readline(self, timeout: float) -> str:
        """The next stdout line; TrialError when it does not come within ``timeout``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoAnswer(
                    f"{self.role} {self.spec['driver']}: no answer in "
                    f"{timeout:.0f} s{self.stderr_tail()}"
                )
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise TrialError(
                        f"{self.role} {self.spec['driver']} exited "
                        f"({self.proc.wait()}){self.stderr_tail()}"
                    )
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def result(self, timeout: float) -> dict[str, Any]:
        line = self.readline(timeout)
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise TrialError(f"{self.role}: unexpected output {line[:200]!r}") from None
        if not isinstance(value, dict):
            raise TrialError(f"{self.role}: unexpected output {line[:200]!r}")
        return value

    def stderr_tail(self) -> str:
        self.err.seek(0)
        text = self.err.read().decode(errors="replace").strip()
        return f": {text[-600:]}" if text else ""

    def end(self) -> None:
        self.tell("exit")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.err.close()


@dataclass
class Trial:
    """The raw results of one trial, publishers and subscribers in spec order."""

    publishers: list[dict[str, Any]] = field(default_factory=list)
    subscribers: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # from ``sample``


def run_trial(
    pubs: list[dict[str, Any]],
    subs: list[dict[str, Any]],
    *,
    stall: int = 0,
    on_go: Callable[[], None] | None = None,
    sample: Callable[[], dict[str, Any]] | None = None,
    expected_s: float = 10.0,
) -> Trial:
    """Run one trial. The first ``stall`` subscribers are SIGSTOPped after ``ready`` and
    resumed after the publishers finished. ``sample`` is called every 0.1 s while the
    publishers run; ``on_go`` just before ``go``."""
    workers: list[Worker] = []
    trial = Trial()
    try:
        sub_workers = [Worker("subscriber", s) for s in subs]
        workers += sub_workers
        pub_workers = [Worker("publisher", p) for p in pubs]
        workers += pub_workers
        for w in sub_workers:
            if (line := w.readline(READY_TIMEOUT)) != "ready":
                raise TrialError(f"subscriber: expected 'ready', got {line[:200]!r}")
        stalled = sub_workers[:stall]
        for w in stalled:
            os.kill(w.proc.pid, signal.SIGSTOP)
        if on_go is not None:
            on_go()
        for w in pub_workers:
            w.tell("go")
        deadline = time.monotonic() + expected_s + RESULT_GRACE
        for w in pub_workers:
            while sample is not None:
                trial.samples.append(sample())
                try:
                    trial.publishers.append(w.result(0.1))
                    break
                except NoAnswer:
                    if w.proc.poll() is not None or time.monotonic() > deadline:
                        raise
            else:
                trial.publishers.append(w.result(max(1.0, deadline - time.monotonic())))
        for w in stalled:
            os.kill(w.proc.pid, signal.SIGCONT)
        for w in sub_workers:
            w.tell("stop")
        for w in sub_workers:
            trial.subscribers.append(w.result(RESULT_GRACE))
        return trial
    finally:
        for w in workers:
            if w.proc.poll() is None:
                os.kill(w.proc.pid, signal.SIGCONT)
            w.end()
