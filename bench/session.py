"""Settings, progress and the record of one benchmark session."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import metrics
from bench.probe import Unproven
from bench.runner import Trial, TrialError, run_trial
from bench.servers import Server, Unavailable
from bench.systems import SYSTEMS, ServerPool, python_client_missing, specs


@dataclass
class Settings:
    """Durations in seconds. ``messages``, when set, replaces every duration by a count."""

    repeat: int = 3
    duration: float = 2.0
    paced_steps: int = 4
    paced_step: float = 1.5
    fan: int = 10
    latency_rate: float = 5000.0
    latency_duration: float = 3.0
    topics: int = 100_000
    stall_count: int = 1_000_000
    messages: int | None = None
    profile: bool = True
    profile_native: bool = False  # py-spy --native: C frames (libzmq, msgpack, libc) too
    profile_duration: float = 3.0
    busd_flags: tuple[str, ...] = ()  # more flags for every busd the session starts
    probe_timeout: float = 10.0  # seconds to prove a busd's checks on (warm-up included)
    batch_sizes: tuple[int, ...] = (1, 10, 100)  # the batch sweep's publisher max_batch values

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            repeat=1,
            duration=0.5,
            paced_steps=3,
            paced_step=0.5,
            latency_duration=1.0,
            topics=20_000,
            stall_count=100_000,
            profile=False,
        )

    def load(self, **spec: Any) -> dict[str, Any]:
        """Publisher spec fields for a flat-out or paced load of the default length."""
        if self.messages is not None and "count" not in spec:
            spec["count"] = self.messages
        spec.setdefault("duration", self.duration)
        return spec

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress:
    """One line per finished step on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, text: str) -> None:
        self.done += 1
        self.note(text)

    def note(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        line = f"[{self.done:3d}/{self.total} {elapsed // 60}m{elapsed % 60:02d}s] {text}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def say(self, text: str) -> None:
        """A message that stays (skips, errors)."""
        if self.tty:
            sys.stderr.write("\r\033[K")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


@dataclass
class Session:
    settings: Settings
    systems: list[str]
    progress: Progress
    pool: ServerPool = field(init=False)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pool = ServerPool(self.settings.busd_flags, self.settings.probe_timeout)

    def available(self) -> list[str]:
        """The selected systems that can run, starting their servers; skips are recorded."""
        ok = []
        for name in self.systems:
            if name in self.skipped:
                continue
            system = SYSTEMS[name]
            why = python_client_missing(system)
            if why is None:
                try:
                    self.pool.get(system.server)
                except Unproven as exc:  # busd runs, but not as the figures would claim
                    why = str(exc)
                    self.errors.append(f"{name}: not measured: {why}")
                except Unavailable as exc:
                    why = str(exc)
            if why is not None:
                self.skipped[name] = why
                self.progress.say(f"skipping {name}: {why}")
                continue
            ok.append(name)
        return ok

    def record(self, workload: str, system: str, run: dict[str, Any]) -> None:
        self.results.setdefault(workload, {}).setdefault(system, {"runs": []})["runs"].append(run)

    def error(self, workload: str, system: str, exc: Exception) -> None:
        text = f"{workload} · {system}: {exc}"
        self.errors.append(text)
        self.progress.say("error: " + text)

    def trial(
        self,
        workload: str,
        name: str,
        n_pubs: int,
        n_subs: int,
        *,
        server: Server | None = None,
        expected_s: float = 10.0,
        stall: int = 0,
        **spec: Any,
    ) -> tuple[Trial, dict[str, Any]] | None:
        """One trial of ``name``; figures from ``metrics.delivery`` plus the server's CPU.
        Errors are recorded and give None (the session goes on)."""
        system = SYSTEMS[name]
        try:
            if server is None:
                server = self.pool.get(system.server)
            pubs, subs = specs(system, server, n_pubs, n_subs, **spec)
            pid = server.pid if server is not None else None
            cpu: list[float | None] = [None]

            def mark() -> None:
                cpu[0] = metrics.cpu_seconds(pid) if pid else None

            trial = run_trial(pubs, subs, on_go=mark, expected_s=expected_s, stall=stall)
            after = metrics.cpu_seconds(pid) if pid else None
            used = after - cpu[0] if after is not None and cpu[0] is not None else None
            return trial, metrics.delivery(trial, used)
        except (TrialError, Unavailable, OSError) as exc:
            self.error(workload, name, exc)
            return None
