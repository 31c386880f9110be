"""busdctl pool ...: the single-broker commands applied to every broker of a pool file.

Every broker is addressed (in parallel, each with its own ``--timeout``) and reported on its
own line, in pool file order; a broker that is down is reported and never stops the others.
``pool restart`` (cli/pool_restart.py) restarts the brokers one at a time, each ready before
the next.

The pool file is ``--pool FILE``, else ``$BUSD_POOL``, else ``/etc/busd/pool.toml`` when it
exists (the path deploy/README.md installs it to).

Exit status (cli/exits.py): 0 every broker did it; 1 some broker failed (down, refused, not
ready; listed last); 2 the pool file is missing or wrong; 4 (``pool rates`` only) every broker
answered but their rate limits differ.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busd_client.cli.common import add_json, dump_json, error
from busd_client.cli.control import number, table
from busd_client.cli.exits import EXIT_FAILED, EXIT_USAGE, EXIT_WARNING
from busd_client.cli.exposition import quantile_ms, readyz, reason, scrape
from busd_client.cli.stats import StateFigures, Summary
from busd_client.control import ControlClient, ControlError, ControlUnavailable
from busd_client.pool_file import POOL_ENV, PoolEntry, PoolFileError, pool_from_args

__all__ = ["ETC_POOL", "EXIT_POOL_FILE", "Outcome", "address_all", "reason", "register"]

EXIT_POOL_FILE = EXIT_USAGE
EXIT_DRIFT = EXIT_WARNING
DEFAULT_TIMEOUT = 5.0
ETC_POOL = "/etc/busd/pool.toml"


@dataclass
class Outcome:
    """What one broker answered (``data``), or why it could not (``error``)."""

    name: str
    ok: bool
    data: Any = None
    error: str = ""

    def as_dict(self, key: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            **({key: self.data} if self.ok else {"error": self.error}),
        }


class BrokerFailed(Exception):
    """One broker could not do it; the message is what the operator reads."""


def address_all(pool: list[PoolEntry], action: Callable[[PoolEntry], Any]) -> list[Outcome]:
    """``action`` on every broker at once; outcomes in pool order. An exception from one
    broker becomes its failed outcome: it never stops the others."""

    def one(entry: PoolEntry) -> Outcome:
        try:
            return Outcome(entry.name, True, action(entry))
        except BrokerFailed as exc:
            return Outcome(entry.name, False, error=str(exc))
        except Exception as exc:  # a surprise from one broker's answer stays with that broker
            return Outcome(entry.name, False, error=f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=min(16, len(pool))) as workers:
        return list(workers.map(one, pool))


def control_call(entry: PoolEntry, timeout: float, cmd: str, **params: Any) -> dict[str, Any]:
    """One control command to one broker; failures raised as ``BrokerFailed``."""
    if entry.control is None:
        raise BrokerFailed("no control socket in the pool file")
    try:
        with ControlClient(entry.control, timeout=timeout) as client:
            return client.call(cmd, **params)
    except ControlUnavailable as exc:
        raise BrokerFailed(f"down: {exc.message}") from None
    except ControlError as exc:
        raise BrokerFailed(f"refused: {exc.message} ({exc.code})") from None


def metrics_summary(entry: PoolEntry, timeout: float) -> Summary:
    if entry.metrics is None:
        raise BrokerFailed("no metrics address in the pool file")
    try:
        return Summary.of(scrape(entry.metrics, timeout), time.monotonic())
    except OSError as exc:
        raise BrokerFailed(
            f"down: cannot read metrics from {entry.metrics}: {reason(exc)}"
        ) from None


# -- commands -----------------------------------------------------------------------------


def run_status(args: argparse.Namespace, pool: list[PoolEntry]) -> int:
    def status(entry: PoolEntry) -> dict[str, Any]:
        if entry.metrics is None and entry.control is None:
            raise BrokerFailed("nothing to check: no metrics or control in the pool file")
        found: dict[str, Any] = {"ready": None, "control": None}
        problems = []
        if entry.metrics is not None:
            try:
                code, found["ready"] = readyz(entry.metrics, args.timeout)
                if code != 200:
                    problems.append(f"/readyz answered {code} {found['ready']}")
            except OSError as exc:
                problems.append(f"down: {entry.metrics} does not answer: {reason(exc)}")
        if entry.control is not None:
            try:
                control_call(entry, args.timeout, "rates.list")
                found["control"] = "ok"
            except BrokerFailed as exc:
                problems.append(f"control socket: {exc}")
        if problems:
            raise BrokerFailed("; ".join(problems))
        return found

    outcomes = address_all(pool, status)
    if args.json:
        print(
            dump_json(
                {
                    "brokers": [o.as_dict("status") for o in outcomes],
                    "failed": failed_names(outcomes),
                }
            )
        )
    else:
        for o in outcomes:
            found = [
                f"{what} {o.data[key]}"
                for what, key in (("/readyz", "ready"), ("control", "control"))
                if o.ok and o.data[key]
            ]
            print(f"{o.name}: " + (", ".join(found) if o.ok else f"FAILED: {o.error}"))
    return finish(args, outcomes, len(pool))


def run_rates(args: argparse.Namespace, pool: list[PoolEntry]) -> int:
    outcomes = address_all(pool, lambda e: control_call(e, args.timeout, "rates.list"))
    drift = rate_drift(outcomes)
    if args.json:
        print(
            dump_json(
                {
                    "brokers": [o.as_dict("rates") for o in outcomes],
                    "drift": drift,
                    "failed": failed_names(outcomes),
                }
            )
        )
    else:
        for o in outcomes:
            if not o.ok:
                print(f"{o.name}: FAILED: {o.error}")
                continue
            limits, errors = o.data.get("limits") or [], o.data.get("errors") or []
            print(
                f"{o.name}: rates directory {o.data.get('dir', '?')}"
                + (
                    f"; {len(errors)} rates file problem(s), see `busdctl rates` there"
                    if errors
                    else ""
                )
            )
            body = (
                table(
                    ["KEY", "RATE/S", "BURST", "TOKENS", "THROTTLED", "DISABLED"],
                    [
                        [
                            r["key"],
                            "0 (disabled)" if r["rate"] == 0 else number(r["rate"]),
                            number(r["burst"]),
                            number(r["tokens"]),
                            r["throttled_total"],
                            r["disabled_total"],
                        ]
                        for r in limits
                    ],
                )
                if limits
                else "no limits: publishing is unlimited"
            )
            print("\n".join("  " + line for line in body.splitlines()))
        answered = sum(o.ok for o in outcomes)
        if drift is None:
            print(f"\nrates: the same on all {answered} broker(s) that answered")
        else:
            print(f"\nDRIFT: {', '.join(drift['brokers'])} {drift['summary']}")
            for key, values in drift["keys"].items():
                print(
                    f"  {key}: "
                    + ", ".join(
                        f"{name} {limit_text(v['rate'], v['burst']) if v else 'unlimited'}"
                        for name, v in values.items()
                    )
                )
    status = finish(args, outcomes, len(pool))
    return status or (EXIT_DRIFT if drift is not None else 0)


def limit_text(rate: Any, burst: Any) -> str:
    return "0 (disabled)" if rate == 0 else f"{number(rate)}/s burst {number(burst)}"


def rate_drift(outcomes: list[Outcome]) -> dict[str, Any] | None:
    """None when every broker that answered has the same limits in force; else which
    brokers differ from the majority (all of them when there is none) and, per key that
    differs, each broker's limit (None: unlimited)."""
    limits = {
        o.name: {r["key"]: (r["rate"], r["burst"]) for r in o.data.get("limits") or []}
        for o in outcomes
        if o.ok
    }
    groups = Counter(tuple(sorted(v.items())) for v in limits.values())
    if len(groups) <= 1:
        return None
    (common, most), *rest = groups.most_common()
    if rest and rest[0][1] == most:
        flagged, summary = sorted(limits), "disagree: no limit set is held by a majority"
    else:
        flagged = [n for n, v in limits.items() if tuple(sorted(v.items())) != common]
        others = [n for n in limits if n not in flagged]
        summary = f"differ(s) from the other brokers ({', '.join(others)})"
    keys = sorted({k for v in limits.values() for k in v})
    differing = {
        k: {
            n: (None if k not in v else {"rate": v[k][0], "burst": v[k][1]})
            for n, v in limits.items()
        }
        for k in keys
        if len({v.get(k) for v in limits.values()}) > 1
    }
    return {"brokers": flagged, "summary": summary, "keys": differing}


def run_rate_set(args: argparse.Namespace, pool: list[PoolEntry]) -> int:
    params: dict[str, Any] = {"key": args.key, "rate": args.rate}
    if args.burst is not None:
        params["burst"] = args.burst
    outcomes = address_all(pool, lambda e: control_call(e, args.timeout, "rates.set", **params))
    return report_each(
        args,
        outcomes,
        "reply",
        lambda r: f"{r['key']}: {limit_text(r['rate'], r['burst'])} (written to {r['file']})",
    )


def run_rate_clear(args: argparse.Namespace, pool: list[PoolEntry]) -> int:
    outcomes = address_all(
        pool, lambda e: control_call(e, args.timeout, "rates.clear", key=args.key)
    )
    return report_each(
        args,
        outcomes,
        "reply",
        lambda r: (
            f"{r['key']}: " + ("cleared, now unlimited" if r.get("cleared") else "had no limit")
        ),
    )


def run_schemas_reload(args: argparse.Namespace, pool: list[PoolEntry]) -> int:
    outcomes = address_all(pool, lambda e: control_call(e, args.timeout, "schemas.reload"))
    return report_each(
        args,
        outcomes,
        "reply",
        lambda r: (
            f"reloaded: {r.get('loaded', '?')} schema(s), {r.get('versions', '?')} version(s)"
        ),
    )


def run_stats(args: argparse.Namespace, pool: list[PoolEntry]) -> int:
    outcomes = address_all(pool, lambda e: metrics_summary(e, args.timeout))
    read = [o.data for o in outcomes if o.ok]
    total = pool_total(read)
    if args.json:
        print(
            dump_json(
                {
                    "brokers": [
                        {
                            "name": o.name,
                            "ok": o.ok,
                            **({"stats": o.data.as_dict()} if o.ok else {"error": o.error}),
                        }
                        for o in outcomes
                    ],
                    "total": total,
                    "failed": failed_names(outcomes),
                }
            )
        )
    else:
        header = [
            "BROKER",
            "STATE",
            "RECEIVED",
            "ACCEPTED",
            "REJECTED",
            "THROTTLED",
            "PUBS",
            "SUBS",
            "KEYS",
            "P99",
        ]

        def row(name: str, state: str, d: dict[str, Any]) -> list[Any]:
            p99 = d["latency_ms"]["p99"]
            return [
                name,
                state,
                d["received"],
                d["accepted"],
                sum(d["rejected"].values()),
                sum(d["throttled"].values()),
                d["publishers_connected"],
                d["subscribers_connected"],
                "-" if d["state"] is None else d["state"]["entries"],
                "-" if p99 is None else f"<={p99:g}ms",
            ]

        rows = [
            row(
                o.name,
                "draining" if o.data.draining else "ready" if o.data.ready else "NOT READY",
                o.data.as_dict(),
            )
            if o.ok
            else [o.name, "DOWN", *["-"] * 8]
            for o in outcomes
        ]
        rows.append(row("TOTAL", f"{total['brokers_ready']}/{len(pool)} ready", total))
        print(table(header, rows))
        for o in outcomes:
            if not o.ok:
                print(f"{o.name}: {o.error}")
    return finish(args, outcomes, len(pool))


def pool_total(summaries: list[Summary]) -> dict[str, Any]:
    """Counters summed over the brokers read; latency quantiles from the merged histogram
    (every busd uses the same buckets), so the pool p99 is a real p99, not an average. The
    state figures are summed too (``StateFigures.total``): each broker holds its own."""
    dicts = [s.as_dict() for s in summaries]
    total: dict[str, Any] = {
        "brokers_read": len(dicts),
        "brokers_ready": sum(bool(d["ready"]) for d in dicts),
    }
    for key in (
        "received",
        "accepted",
        "bytes_in",
        "bytes_accepted",
        "replies_dropped",
        "publishers_connected",
        "subscribers_connected",
        "subscriptions",
    ):
        total[key] = sum(d[key] for d in dicts)
    for key in ("rejected", "throttled"):
        merged: Counter[str] = Counter()
        for d in dicts:
            merged.update(d[key])
        total[key] = dict(sorted(merged.items()))
    buckets: dict[float, float] = {}
    for s in summaries:
        for bound, count in s.latency:
            buckets[bound] = buckets.get(bound, 0.0) + count
    merged_latency = sorted(buckets.items())
    total["latency_ms"] = {
        "p50": quantile_ms(merged_latency, 0.5),
        "p99": quantile_ms(merged_latency, 0.99),
    }
    states = [s.state for s in summaries if s.state is not None]
    total["state"] = StateFigures.total(states).as_dict() if states else None
    return total


# -- reporting ----------------------------------------------------------------------------


def failed_names(outcomes: list[Outcome]) -> list[str]:
    return [o.name for o in outcomes if not o.ok]


def report_each(
    args: argparse.Namespace,
    outcomes: list[Outcome],
    key: str,
    text: Callable[[dict[str, Any]], str],
) -> int:
    if args.json:
        print(
            dump_json(
                {
                    "ok": all(o.ok for o in outcomes),
                    "brokers": [o.as_dict(key) for o in outcomes],
                    "failed": failed_names(outcomes),
                }
            )
        )
    else:
        for o in outcomes:
            print(f"{o.name}: {text(o.data)}" if o.ok else f"{o.name}: FAILED: {o.error}")
    return finish(args, outcomes, len(outcomes))


def finish(args: argparse.Namespace, outcomes: list[Outcome], count: int) -> int:
    failed = failed_names(outcomes)
    if not failed:
        return 0
    command = " ".join(filter(None, ("pool", args.pool_command, getattr(args, "action", None))))
    error(f"{command}: failed on {len(failed)} of {count} broker(s): {', '.join(failed)}")
    return EXIT_FAILED


# -- argument parsing ---------------------------------------------------------------------


def with_pool(
    run: Callable[[argparse.Namespace, list[PoolEntry]], int],
) -> Callable[[argparse.Namespace], int]:
    def func(args: argparse.Namespace) -> int:
        if not args.pool and not os.environ.get(POOL_ENV) and Path(ETC_POOL).is_file():
            args.pool = ETC_POOL
        try:
            pool = pool_from_args(args)
        except PoolFileError as exc:
            error(str(exc))
            return EXIT_POOL_FILE
        return run(args, pool)

    return func


def add_pool(parser: argparse.ArgumentParser, with_timeout: bool = True) -> None:
    parser.add_argument(
        "--pool",
        metavar="FILE",
        help=f"the pool file (TOML, docs/pool.md; env {POOL_ENV}; default {ETC_POOL} if it exists)",
    )
    add_json(parser)
    if with_timeout:
        parser.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            metavar="S",
            help="per-broker timeout in seconds (default %(default)s)",
        )


def register(subparsers: Any) -> None:
    pool = subparsers.add_parser(
        "pool",
        help="address every broker of a pool at once",
        description="Run a command on every broker listed in a pool file, reporting per "
        "broker. Exit status 0 when every broker did it, 1 when some failed "
        "(listed), 2 for a pool file problem.",
    )
    actions = pool.add_subparsers(dest="pool_command", required=True, metavar="COMMAND")

    def command(
        name: str,
        run: Callable[[argparse.Namespace, list[PoolEntry]], int],
        help_: str,
        parent: Any = actions,
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_)
        add_pool(parser)
        parser.set_defaults(func=with_pool(run))
        return parser

    command(
        "status", run_status, "each broker's /readyz state and whether its control socket answers"
    )
    command(
        "rates",
        run_rates,
        "each broker's rate limits, and the brokers whose limits differ (exit 4 on such drift)",
    )
    rate = actions.add_parser("rate", help="set or clear a rate limit on every broker")
    rate_actions = rate.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_ = command("set", run_rate_set, "set KEY to RATE messages/s on every broker", rate_actions)
    set_.add_argument("key", metavar="KEY")
    set_.add_argument("rate", metavar="RATE", help="messages per second, decimal; 0 disables")
    set_.add_argument("--burst", metavar="B", help="bucket size (default max(1, RATE))")
    command(
        "clear", run_rate_clear, "remove KEY's limit on every broker", rate_actions
    ).add_argument("key", metavar="KEY")
    command("stats", run_stats, "each broker's counters and the pool total")
    schemas = actions.add_parser("schemas", help="reload the schemas of every broker")
    schema_actions = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(
        "reload",
        run_schemas_reload,
        "every broker reads its schemas directory again",
        schema_actions,
    )

    # Imported here: pool_restart builds on this module's helpers, so it imports this module.
    from busd_client.cli.pool_restart import register_restart  # noqa: PLC0415

    register_restart(actions)
