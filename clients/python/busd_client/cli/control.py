"""busdctl rates, busdctl rate set|clear, busdctl schemas [reload]: commands on the control socket.

Exit status (cli/exits.py): 0 done; 1 busd refused the command (its error code is printed);
2 bad arguments (busd's bad_argument included); 3 busd could not be reached; 4 (``rates``)
listed, but a rates file is refused and its last good value stays in force.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Sequence
from typing import Any

from busd_client.cli import locate
from busd_client.cli.common import add_control, add_json, dump_json, fail
from busd_client.cli.exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    EXIT_WARNING,
)
from busd_client.control import ControlClient, ControlError, ControlUnavailable

__all__ = ["call", "register", "unreachable"]


def register(subparsers: Any) -> None:
    rates = subparsers.add_parser(
        "rates",
        help="list rate limits, tokens, throttle counts and rate file errors",
        description="List the rate limits in force with their current tokens and recent "
        "(about 60 s) and total refusals, and problems found in the rates "
        "directory.",
    )
    add_control(rates)
    add_json(rates)
    rates.set_defaults(func=run_rates)

    rate = subparsers.add_parser(
        "rate",
        help="set or clear a rate limit",
        description="Set or clear a rate limit. busd writes the rates file atomically, so "
        "the limit survives a crash or restart.",
    )
    actions = rate.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_ = actions.add_parser(
        "set",
        help="set KEY to RATE messages/s",
        description="KEY is publish, publish.<topic prefix> or publisher.<name>; RATE 0 "
        "stops publishing (disabled).",
    )
    set_.add_argument("key", metavar="KEY")
    set_.add_argument("rate", metavar="RATE", help="messages per second, decimal; 0 disables")
    set_.add_argument("--burst", metavar="B", help="bucket size (default max(1, RATE))")
    clear = actions.add_parser("clear", help="remove KEY's limit (unlimited)")
    clear.add_argument("key", metavar="KEY")
    for parser in (set_, clear):
        add_control(parser)
        add_json(parser)
    set_.set_defaults(func=run_rate_set)
    clear.set_defaults(func=run_rate_clear)

    schemas = subparsers.add_parser(
        "schemas",
        help="list loaded schemas; `schemas reload` reloads them",
        description="Without ACTION, list the schemas busd has loaded.",
    )
    schemas.add_argument(
        "action",
        nargs="?",
        choices=["reload"],
        metavar="ACTION",
        help="reload: read the schemas directory again",
    )
    add_control(schemas)
    add_json(schemas)
    schemas.set_defaults(func=run_schemas)


def call(args: argparse.Namespace, cmd: str, **params: Any) -> dict[str, Any] | int:
    """busd's reply to one control command, or the exit status after reporting why not.
    The socket is found by cli/locate.py's discovery order."""
    try:
        path = locate.control(args)
    except locate.LocateError as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)
    try:
        with ControlClient(path.value) as client:
            return client.call(cmd, **params)
    except ControlUnavailable as exc:
        return fail(args, exc.code, unreachable(exc, path), EXIT_UNREACHABLE)
    except ControlError as exc:
        status = EXIT_USAGE if exc.code == "bad_argument" else EXIT_FAILED
        return fail(args, exc.code, f"{cmd}: {exc.message} ({exc.code})", status)


def unreachable(exc: ControlUnavailable, path: locate.Found) -> str:
    """ "cannot talk to busd at PATH (found via SOURCE): why" (no source for a flag)."""
    if path.source.startswith("--"):
        return exc.message
    at = f"at {path.value}"
    return exc.message.replace(at, f"{at} (found via {path.source})", 1)


def run_rates(args: argparse.Namespace) -> int:
    reply = call(args, "rates.list")
    if isinstance(reply, int):
        return reply
    errors = reply.get("errors") or []
    status = EXIT_WARNING if errors else EXIT_OK
    if args.json:
        print(dump_json(reply))
        return status
    print(f"rates directory: {reply.get('dir', '?')}")
    limits = reply.get("limits") or []
    if limits:
        print(
            table(
                [
                    "KEY",
                    "RATE/S",
                    "BURST",
                    "TOKENS",
                    "THROTTLED(60s)",
                    "THROTTLED",
                    "DISABLED(60s)",
                    "DISABLED",
                ],
                [
                    [
                        row["key"],
                        "0 (disabled)" if row["rate"] == 0 else number(row["rate"]),
                        number(row["burst"]),
                        number(row["tokens"]),
                        row["throttled_recent"],
                        row["throttled_total"],
                        row["disabled_recent"],
                        row["disabled_total"],
                    ]
                    for row in limits
                ],
            )
        )
    else:
        print("no limits: publishing is unlimited")
    if errors:
        print("\nrates directory problems (last good values stay in force):")
        print(
            table(
                ["FILE", "KIND", "SEEN", "SINCE", "PROBLEM"],
                [
                    [
                        e["file"] or "(directory)",
                        e["kind"],
                        e["count"],
                        when(e["since"]),
                        e["message"],
                    ]
                    for e in errors
                ],
            )
        )
    return status


def run_rate_set(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"key": args.key, "rate": args.rate}
    if args.burst is not None:
        params["burst"] = args.burst
    reply = call(args, "rates.set", **params)
    if isinstance(reply, int):
        return reply
    if args.json:
        print(dump_json(reply))
    elif reply["rate"] == 0:
        print(f"{reply['key']}: disabled (written to {reply['file']})")
    else:
        print(
            f"{reply['key']}: {number(reply['rate'])}/s, burst {number(reply['burst'])} "
            f"(written to {reply['file']})"
        )
    return 0


def run_rate_clear(args: argparse.Namespace) -> int:
    reply = call(args, "rates.clear", key=args.key)
    if isinstance(reply, int):
        return reply
    if args.json:
        print(dump_json(reply))
    else:
        state = "cleared, now unlimited" if reply.get("cleared") else "had no limit"
        print(f"{reply['key']}: {state}")
    return 0


def run_schemas(args: argparse.Namespace) -> int:
    reply = call(args, "schemas.reload" if args.action == "reload" else "schemas.list")
    if isinstance(reply, int):
        return reply
    print(dump_json(reply) if args.json else readable(reply))
    return 0


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def when(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns; the last column is not padded."""
    cells = [list(header)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False))
        + ("  " if len(row) > 1 else "")
        + row[-1]
        for row in cells
    )


def readable(value: Any, indent: str = "") -> str:
    """A reply of unknown shape as text: scalars inline, lists of objects as tables."""
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{indent}{key}:")
                lines.append(readable(item, indent + "  "))
            else:
                shown = "(none)" if isinstance(item, dict | list) else cell(key, item)
                lines.append(f"{indent}{key}: {shown}")
        return "\n".join(lines)
    if isinstance(value, list):
        if value and all(isinstance(item, dict) for item in value):
            header = list(dict.fromkeys(k for item in value for k in item))
            body = table(
                [h.upper() for h in header],
                [[cell(h, item.get(h, "")) for h in header] for item in value],
            )
            return "\n".join(indent + line for line in body.splitlines())
        return "\n".join(f"{indent}- {scalar(item)}" for item in value)
    return indent + scalar(value)


def cell(key: str, value: Any) -> str:
    """Timestamps (keys ``*_at``, ``since``, ``last_seen``: Unix seconds) as local time."""
    if (
        (key.endswith("_at") or key in ("since", "last_seen"))
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        return when(value)
    return scalar(value)


def scalar(value: Any) -> str:
    """A value as table text: lists joined by commas, maps as ``key=value``, never a repr."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float | int):
        return number(value)
    if isinstance(value, list):
        return ", ".join(scalar(item) for item in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={scalar(v)}" for k, v in value.items())
    return json.dumps(value, ensure_ascii=False, default=str)
