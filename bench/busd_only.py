"""Workloads for busd alone: the cost of each check, and bounded memory under a stalled
subscriber. Each starts its own busd instances (they need their own configuration, and a
fresh process for a meaningful peak RSS).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import metrics, servers, systems
from bench.probe import Expect, Unproven
from bench.runner import TrialError, run_trial
from bench.servers import BusdOptions, Server, Unavailable
from bench.session import Session

# The switches that turn a check off. busd has none yet for schemas: the variant is skipped
# (and said so) until `busd --help` lists the flag; meanwhile an accept-all schema
# ({"type": "object"}) isolates what checking the payload costs. Rates "off" is approximated
# by an empty rates directory (no key applies: the check runs but takes no token).
SCHEMA_OFF_FLAG = ("--schema-checks", "off")
RATES_OFF_FLAG = ("--rate-checks", "off")
PER_MESSAGE_OVERHEAD = 1024  # bytes a queued message may cost beyond its frames (libzmq)
FIXED_OVERHEAD_KIB = 32 * 1024  # allowance for the Python heap, batches, replies


def accept_all_schemas(root: Path) -> Path:
    """A schemas directory like the repo's, but every ``release`` version is ``{"type":
    "object"}``: the schema lookup and dispatch still run, the payload check is trivial."""
    release = root / "release"
    release.mkdir(parents=True)
    shutil.copy(servers.REPO / "schemas" / "release" / "meta.json", release / "meta.json")
    for version in sorted((servers.REPO / "schemas" / "release").glob("v*.json")):
        (release / version.name).write_text('{"type": "object"}\n')
    return root


Variant = tuple[str, BusdOptions, Expect]


def check_variants(trivial: Path, flags: tuple[str, ...] = ()) -> tuple[list[Variant], list[str]]:
    """(label, options, checks the probe must find) for each measurable variant, and notes
    on those that are not. ``trivial``: an empty directory for the accept-all schemas;
    ``flags``: more busd flags for every variant (``--busd-flag``)."""
    help_text = servers.busd_flags()
    schema_off = SCHEMA_OFF_FLAG[0] in help_text
    rates_off = RATES_OFF_FLAG[0] in help_text
    rates_off_extra = RATES_OFF_FLAG if rates_off else ()
    variants: list[Variant] = [
        ("schema + rate bucket", BusdOptions(rates=True, extra=flags), Expect(True, True)),
        (
            "schema, no rate keys",
            BusdOptions(rates=False, extra=rates_off_extra + flags),
            Expect(True, False),
        ),
        (
            "accept-all schema + rate bucket",
            BusdOptions(rates=True, schemas_dir=accept_all_schemas(trivial), extra=flags),
            Expect(False, True),  # the probe's invalid payload is valid for {"type": "object"}
        ),
    ]
    notes = []
    if not rates_off:
        notes.append(
            f"busd has no {RATES_OFF_FLAG[0]} switch: 'no rate keys' means an "
            "empty rates directory (the check still runs, without a bucket)"
        )
    if schema_off:
        variants += [
            (
                "rate bucket, no schema",
                BusdOptions(rates=True, extra=SCHEMA_OFF_FLAG + flags),
                Expect(False, True),
            ),
            (
                "no checks",
                BusdOptions(rates=False, extra=SCHEMA_OFF_FLAG + rates_off_extra + flags),
                Expect(False, False),
            ),
        ]
    else:
        notes.append(f"busd has no {SCHEMA_OFF_FLAG[0]} switch: schema-off variants skipped")
    return variants, notes


def checks(session: Session) -> None:
    """1 -> 1 flat-out with the raw publisher against busd variants; busd CPU per message."""
    s = session.settings
    scratch = Path(tempfile.mkdtemp(prefix="bench-schemas-"))
    variants, notes = check_variants(scratch, s.busd_flags)
    for note in notes:
        session.progress.say(note)
    running: dict[str, Server] = {}
    out: dict[str, Any] = {"notes": notes, "variants": {}}
    session.results["checks"] = out
    try:
        for i, (label, opts, expect) in enumerate(variants):
            try:
                running[label] = systems.start_busd_variant(
                    f"busd-{i}", opts, expect, s.probe_timeout
                )
            except Unproven as exc:  # not measured: its row would claim checks it lacks
                session.error("checks", label, exc)
                out["variants"][label] = {"unproven": str(exc), "expected": asdict(expect)}
                continue
            except Unavailable as exc:
                session.error("checks", label, exc)
                continue
            out["variants"][label] = {
                "checks": running[label].notes["checks"],
                "expected": asdict(expect),
                "argv": running[label].notes["argv"],
                "runs": [],
            }
        for rep in range(s.repeat):
            for label, server in running.items():
                got = session.trial(
                    "checks", "busd-raw", 1, 1, server=server, expected_s=s.duration, **s.load()
                )
                if got is None:
                    session.progress.step(f"check cost · {label} · run {rep + 1}: failed")
                    continue
                figures = got[1]
                out["variants"][label]["runs"].append(figures)
                cost = figures.get("server_cpu_us_per_msg")
                session.progress.step(
                    f"check cost · {label} · run {rep + 1}: {figures['delivered'] / 1000:.1f}k "
                    f"msg/s, busd {cost if cost is None else round(cost, 2)} µs CPU/msg"
                )
    finally:
        for server in running.values():
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    for variant in out["variants"].values():
        runs = variant.get("runs", [])
        variant["median"] = {
            k: metrics.median_of(runs, k) for k in ("delivered", "server_cpu_us_per_msg")
        }


def _busd_limits(server: Server) -> dict[str, int]:
    flags = server.notes["argv"]
    assert isinstance(flags, list)
    argv = [str(servers.busd_executable()), *map(str, flags), "--check-config"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True)
    config = json.loads(out.stdout)
    return {k: int(config[k]) for k in ("sub_hwm", "pub_hwm", "max_message_bytes")}


def memory(session: Session) -> None:
    """A SIGSTOPped subscriber while ``stall_count`` messages flow through busd.

    A baseline trial without the stalled subscriber first, then the stalled one; busd's
    VmRSS is sampled every 0.1 s and VmHWM read at the end. Two other subscribers must get
    every message at (nearly) the baseline rate.
    """
    s = session.settings
    count = s.messages if s.messages is not None else s.stall_count
    try:
        server = systems.start_busd_variant(
            "busd-mem", BusdOptions(rates=True, extra=s.busd_flags), timeout=s.probe_timeout
        )
    except Unavailable as exc:
        session.error("memory", "busd", exc)
        return
    try:
        limits = _busd_limits(server)
        system = systems.SYSTEMS["busd-raw"]
        out: dict[str, Any] = {"messages": count, "limits": limits}
        session.results["memory"] = out
        base_count = min(count, max(count // 4, 100_000))
        base_pubs, base_subs = systems.specs(system, server, 1, 2, count=base_count)
        base = run_trial(base_pubs, base_subs, expected_s=base_count / 20_000)
        out["baseline"] = metrics.delivery(base)
        session.progress.step(
            f"memory · baseline: {out['baseline']['delivered'] / 1000:.1f}k msg/s to 2 subscribers"
        )
        idle = servers.memory_kib(server.pid)
        pubs, subs = systems.specs(system, server, 1, 3, count=count)
        started = time.monotonic()

        def sample() -> dict[str, Any]:
            return {"t": round(time.monotonic() - started, 2), **servers.memory_kib(server.pid)}

        trial = run_trial(pubs, subs, stall=1, sample=sample, expected_s=count / 20_000)
        end = servers.memory_kib(server.pid)
        active = metrics.delivery(type(trial)(trial.publishers, trial.subscribers[1:]))
        stalled = trial.subscribers[0]["received"]
        envelope = 210  # the bench message's envelope + topic, bytes (approximately)
        queued = limits["sub_hwm"] + limits["pub_hwm"]
        out.update(
            {
                "rss_idle_kib": idle.get("VmRSS"),
                "rss_peak_kib": end.get("VmHWM"),
                "rss_end_kib": end.get("VmRSS"),
                "rss_max_sampled_kib": max((x.get("VmRSS", 0) for x in trial.samples), default=0),
                "growth_kib": end.get("VmHWM", 0) - idle.get("VmRSS", 0),
                "bound_documented_kib": (
                    queued * (limits["max_message_bytes"] + 255 + PER_MESSAGE_OVERHEAD)
                )
                // 1024
                + FIXED_OVERHEAD_KIB,
                "bound_this_message_kib": (queued * (envelope + PER_MESSAGE_OVERHEAD)) // 1024
                + FIXED_OVERHEAD_KIB,
                "stalled_received": stalled,
                "active": active,
                "active_rate_ratio": active["delivered"] / out["baseline"]["delivered"]
                if out["baseline"]["delivered"]
                else None,
                "samples": trial.samples[::5],
            }
        )
        out["bound_held"] = out["growth_kib"] <= out["bound_this_message_kib"]
        out["others_unaffected"] = active["lost"] == 0 and (out["active_rate_ratio"] or 0) >= 0.9
        session.progress.step(
            f"memory · {count:,} messages, 1 of 3 subscribers stopped: busd RSS "
            f"{out['rss_idle_kib'] // 1024} -> peak {out['rss_peak_kib'] // 1024} MiB "
            f"(bound {out['bound_this_message_kib'] // 1024} MiB), others at "
            f"{active['delivered'] / 1000:.1f}k msg/s, lost {active['lost']}"
        )
    except (TrialError, OSError, subprocess.SubprocessError) as exc:
        session.error("memory", "busd", exc)
    finally:
        server.stop()
