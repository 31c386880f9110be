"""busd CPU per accepted state message ÷ plain, for a past commit and this checkout, in one
run (docs/performance.md "State"). Four busd processes (each version with the shipped
``instance-state``, which declares ``state``, and with the declaration removed) are fed the
same pre-encoded envelopes in alternating rounds by bench/state.py's raw publisher.

Run: ``.venv/bin/python -m bench.state_before_after [--rev 8f78a25] [--messages 200000]
[--rounds 9]``; the past commit's busd and busd_protocol come from ``git archive``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.state import REPO, cpu_seconds, envelopes, plain_schemas, publish, start_busd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state_before_after")
    parser.add_argument("--rev", default="main", help="the past commit (default: main)")
    parser.add_argument("--messages", type=int, default=200_000, help="a round's messages")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-state-ba-") as tmp:
        root = Path(tmp)
        old = root / "old"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.rev, "busd", "clients"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        plain = plain_schemas(root)
        servers = {}
        for code in ("before", "after"):
            if code == "before":  # the busd script's imports resolve to the archive first
                os.environ["PYTHONPATH"] = f"{old}:{old / 'clients' / 'python'}"
            for kind, schemas in (("state", REPO / "schemas"), ("plain", plain)):
                servers[code, kind] = start_busd(root / f"{code}-{kind}", schemas)
            os.environ.pop("PYTHONPATH", None)
        batch = envelopes(args.messages, 10_000)
        runs: dict[tuple[str, str], list[float]] = {k: [] for k in servers}
        try:
            for _, event in servers.values():  # every key held: later puts are updates
                publish(event["pub_endpoint"], envelopes(10_000, 10_000, start=args.messages))
            for i in range(args.rounds):
                for k in list(servers) if i % 2 == 0 else list(servers)[::-1]:
                    proc, event = servers[k]
                    before = cpu_seconds(proc.pid)
                    accepted = publish(event["pub_endpoint"], batch)
                    assert accepted == args.messages, (k, accepted)
                    runs[k].append((cpu_seconds(proc.pid) - before) / accepted * 1e6)
        finally:
            for proc, _ in servers.values():
                proc.kill()
                proc.wait()
    for code in ("before", "after"):
        state, plain_us = runs[code, "state"], runs[code, "plain"]
        ratios = [a / b for a, b in zip(state, plain_us, strict=True)]
        med_s, med_p = statistics.median(state), statistics.median(plain_us)
        print(
            f"{code}: state {med_s:.2f} µs, plain {med_p:.2f} µs (medians of {args.rounds}): "
            f"{(med_s / med_p - 1) * 100:+.1f} %, median of the rounds' ratios "
            f"{(statistics.median(ratios) - 1) * 100:+.1f} %"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
