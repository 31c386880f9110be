"""busdctl state: the current entries of keyed-state schemas under a prefix (StateView).

``busdctl state PREFIX`` takes one snapshot of every broker (no live stream: busd cuts at
once) and prints the merged entries, a table or ``--json``; ``--follow`` keeps a live view
(snapshot then live, race free) and prints every change until Ctrl-C or ``--timeout``.

Exit status (cli/exits.py): 0 every broker answered; 1 busd refused the snapshot
(``forbidden``, ...) or, in a pool, some broker did not answer (the others' entries are
printed); 2 usage (a pool file without ``state_endpoint``, endpoint lists of different
lengths); 3 no broker answered within ``--timeout``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

import zmq

from busd_client.cli import locate
from busd_client.cli.common import (
    add_json,
    add_state_endpoint,
    add_sub_endpoint,
    dump_json,
    error,
    fail,
)
from busd_client.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from busd_client.keys import KeyError_
from busd_client.pool_file import PoolFileError
from busd_client.pool_strategy import pool_endpoints
from busd_client.state_sockets import StateBroker, pool_state_brokers
from busd_client.state_table import StateChange, StateEntry
from busd_client.state_view import StateView

__all__ = ["register"]

_WAIT = 10.0  # seconds a listing waits for its snapshots by default


def register(subparsers: Any) -> None:
    state = subparsers.add_parser(
        "state",
        help="print the current entries of keyed state",
        description="Print the latest message per key of the keyed-state schemas under "
        "PREFIX (docs/client.md 'State: snapshot then live'): a table, or --json. "
        "--follow keeps printing changes.",
    )
    state.add_argument("prefix", metavar="PREFIX", help='topic prefix ("" = every topic)')
    state.add_argument(
        "--follow", action="store_true", help="keep the view live and print every change"
    )
    state.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help=f"without --follow: seconds to wait for the snapshots (default {_WAIT:g}); "
        "with --follow: exit 0 after S seconds (default: run until interrupted)",
    )
    add_state_endpoint(state)
    add_sub_endpoint(state)
    state.add_argument(
        "--pool",
        metavar="FILE",
        help="every broker of this pool file (each needs state_endpoint); comma-separated "
        "endpoint lists do the same",
    )
    add_json(state)
    state.set_defaults(func=run_state)


def _brokers(args: argparse.Namespace) -> list[StateBroker]:
    if args.pool:
        return pool_state_brokers(args.pool)
    states = pool_endpoints(locate.endpoint(args, "state").value)
    subs = pool_endpoints(locate.endpoint(args, "sub").value) if args.follow else []
    if args.follow and len(subs) != len(states):
        raise ValueError(
            f"{len(states)} state endpoint(s) but {len(subs)} sub endpoint(s): give one of "
            "each per broker, in the same order"
        )
    return [StateBroker(s, subs[i] if subs else "") for i, s in enumerate(states)]


def _key(entry: StateEntry) -> str:
    return "/".join(str(v) for v in entry.key[1:])


def _age(entry: StateEntry, now_ns: int) -> str:
    seconds = max(0, now_ns - entry.message.ts) / 1e9
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _table(entries: list[StateEntry], out: TextIO) -> None:
    now = time.time_ns()
    rows = [
        (e.key[0], _key(e), e.topic, _age(e, now), dump_json(e.data))
        for e in sorted(entries, key=lambda e: tuple(map(str, e.key)))
    ]
    head = ("SCHEMA", "KEY", "TOPIC", "AGE", "DATA")
    widths = [max([len(str(r[i])) for r in rows] + [len(head[i])]) for i in range(4)]
    for row in [head, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        out.write("  ".join([*cells, str(row[4])]).rstrip() + "\n")
    out.write(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}\n")


def _line(change: StateChange) -> str:
    if change.key is None:
        return f"busdctl state: {change.broker}: {change.kind}: {change.detail}"
    entry = change.entry
    assert entry is not None
    what = f"{change.kind} {entry.key[0]} {_key(entry)}"
    if change.kind in ("added", "updated"):
        return f"{what} {dump_json(entry.data)}"
    return f"{what} ({change.detail or change.kind})"


def _outcome(view: StateView, args: argparse.Namespace) -> int:
    """The exit status from what each broker did; says on stderr what went wrong."""
    unanswered = [b for b in view.brokers if not b["snapshots"]]
    for broker in unanswered:
        why = broker["error"] or (
            "not connected" if not broker["connected"] else "no answer in time"
        )
        error(f"state: {broker['broker']}: {why}")
    if not unanswered:
        return EXIT_OK
    refused = any(str(b["error"]).startswith("busd answered") for b in unanswered)
    if len(unanswered) < len(view.brokers) or refused:
        return EXIT_FAILED
    return EXIT_UNREACHABLE


def run_state(args: argparse.Namespace) -> int:
    try:
        brokers = _brokers(args)
    except (ValueError, PoolFileError, locate.LocateError) as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)
    if args.timeout is not None and args.timeout < 0:
        return fail(args, "usage", "--timeout must be >= 0", EXIT_USAGE)
    try:
        view = StateView(args.prefix, brokers=brokers, live=args.follow)
    except zmq.ZMQError as exc:  # an endpoint libzmq cannot use
        return fail(args, "usage", f"cannot use the endpoints: {exc}", EXIT_USAGE)
    except KeyError_ as exc:  # BUSD_KEY / BUSD_SERVER_KEY
        return fail(args, "usage", str(exc), EXIT_USAGE)
    if args.follow:
        return _follow(args, view)
    with view:
        deadline = time.monotonic() + (_WAIT if args.timeout is None else args.timeout)
        while not view.core.answered and time.monotonic() < deadline:
            view.poll(min(0.25, max(0.0, deadline - time.monotonic())))
        status = _outcome(view, args)
        entries = list(view.values())
        if args.json:
            print(
                dump_json(
                    {
                        "ok": status == EXIT_OK,
                        "entries": [e.to_dict() for e in entries],
                        "brokers": view.brokers,
                    }
                )
            )
        elif status != EXIT_UNREACHABLE:
            _table(entries, sys.stdout)
    return status


def _follow(args: argparse.Namespace, view: StateView) -> int:
    """The view's changes as they come: under --json every change as one JSON line; as
    text, the table once every broker was snapshotted, then one line per change."""
    out = sys.stdout
    shown = False
    try:
        with view:
            for change in view.follow(args.timeout):
                if args.json:
                    out.write(dump_json(change.to_dict()) + "\n")
                elif change.key is None:
                    print(_line(change), file=sys.stderr, flush=True)
                elif shown:
                    out.write(_line(change) + "\n")
                if not shown and change.kind == "synced" and view.synced:
                    shown = True  # the table holds every change before this one
                    if not args.json:
                        _table(list(view.values()), out)
                out.flush()
    except KeyboardInterrupt:
        return 130
    return EXIT_OK
