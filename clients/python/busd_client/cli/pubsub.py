"""busdctl pub and busdctl sub.

Exit status (cli/exits.py): ``pub`` 0 every message accepted, 1 some refused (or a bad input
line), 2 usage, 3 busd did not answer some message in time (it could not be sent, or its
reply never came); ``sub`` 0 enough messages arrived, 1 not enough before ``--timeout``, 2
usage, 3 ``--timeout`` passed without ever connecting. While ``sub`` is not connected to an
endpoint it says so on stderr after ``CONNECT_WARNING`` seconds, and keeps trying.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from busd_client.cli import locate
from busd_client.cli.common import (
    add_json,
    add_pub_endpoint,
    add_sub_endpoint,
    dump_json,
    error,
    fail,
)
from busd_client.cli.connections import Connections, MonitoredContext
from busd_client.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from busd_client.errors import BusError, PublishTimeout, Rejected
from busd_client.gaps import Gap
from busd_client.pool import PoolPublisher, PoolReceipt, PoolSubscriber, pool_endpoints
from busd_client.pool_file import PoolFileError, load_pool
from busd_client.publisher import Publisher, Receipt
from busd_client.subscriber import Subscriber

__all__ = ["register"]


def register(subparsers: Any) -> None:
    pub = subparsers.add_parser(
        "pub",
        help="publish messages",
        description="Publish one message (--data) or one per line of JSON objects on stdin. "
        "Exit 0 only when every message was accepted.",
    )
    pub.add_argument("topic", metavar="TOPIC")
    pub.add_argument("--schema", required=True, metavar="NAME", help="schema name")
    pub.add_argument("--version", required=True, type=int, metavar="N", help="schema version")
    pub.add_argument(
        "--data",
        metavar="JSON",
        help="the payload, a JSON object (default: one object per stdin line)",
    )
    pub.add_argument("--id", metavar="ID", help="message id, with --data (default: generated)")
    pub.add_argument(
        "--publisher",
        default="busdctl",
        metavar="NAME",
        help="publisher name (default %(default)s)",
    )
    pub.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds to wait for busd per message; in a pool, for some broker "
        "to accept it (default %(default)s)",
    )
    pub.add_argument(
        "--attempt-timeout",
        type=float,
        default=1.0,
        metavar="S",
        help="in a pool: seconds one broker may take before the message goes to "
        "another (default %(default)s)",
    )
    pub.add_argument(
        "--retry-deadline",
        type=float,
        default=0.0,
        metavar="S",
        help="retry rate_limited messages for up to S seconds (default: no retry)",
    )
    pub.add_argument(
        "--window",
        type=int,
        default=1000,
        metavar="N",
        help="messages in flight at most (default %(default)s)",
    )
    add_pub_endpoint(pub)
    _add_pool(pub)
    add_json(pub)
    pub.set_defaults(func=run_pub)

    sub = subparsers.add_parser(
        "sub",
        help="print messages as JSON lines",
        description="Print one JSON object per message (topic, schema, version, id, "
        "publisher, ts, data). Exit 0 after --count messages; at --timeout exit 0 "
        "only if at least --count (default 1) messages arrived.",
    )
    sub.add_argument(
        "prefixes",
        nargs="*",
        default=[""],
        metavar="PREFIX",
        help="topic prefixes (default: every topic)",
    )
    sub.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    sub.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    add_sub_endpoint(sub)
    _add_pool(sub)
    sub.set_defaults(func=run_sub)


def _add_pool(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pool",
        metavar="FILE",
        help="publish to / subscribe from every broker of this pool file (docs/pool.md); "
        "a comma-separated list of endpoints does the same",
    )


CONNECT_WARNING = 3.0  # seconds without a connection before `sub` says so


def _endpoints(args: argparse.Namespace, which: str) -> list[str]:
    """The broker endpoints to use: the pool file's, or the comma-separated endpoint found
    as cli/locate.py says (flag, environment, busd's configuration, default)."""
    if args.pool:
        return [getattr(entry, f"{which}_endpoint") for entry in load_pool(args.pool)]
    return pool_endpoints(locate.endpoint(args, which).value)


def _parse_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _inputs(args: argparse.Namespace, bad: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, payload) pairs; unparseable stdin lines go to ``bad``."""
    if args.data is not None:
        yield 0, _parse_object(args.data)
        return
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            yield number, _parse_object(line)
        except ValueError as exc:
            bad.append(f"line {number}: not a JSON object: {exc}")
            error(bad[-1])


def _where(number: int) -> str:
    return "message" if number == 0 else f"line {number}"


def _describe(err: BusError) -> str:
    if isinstance(err, Rejected):
        return f"rejected {err.code}: {err.reason}"
    if isinstance(err, PublishTimeout):
        return f"timed out: {err}"
    return f"failed: {err}"


def _outcome(err: BusError) -> str:
    return (
        err.code
        if isinstance(err, Rejected)
        else "timeout"
        if isinstance(err, PublishTimeout)
        else "closed"
    )


def run_pub(args: argparse.Namespace) -> int:
    if args.id is not None and args.data is None:
        return fail(args, "usage", "--id needs --data (stdin lines get generated ids)", EXIT_USAGE)
    try:  # before reading stdin: a wrong address must not wait for input first
        endpoints = _endpoints(args, "pub")
    except (ValueError, PoolFileError, locate.LocateError) as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)
    bad: list[str] = []
    try:
        inputs = _inputs(args, bad)
        first = next(inputs, None)
    except ValueError as exc:
        return fail(args, "usage", f"--data: not a JSON object: {exc}", EXIT_USAGE)
    accepted = 0
    failed: Counter[str] = Counter()
    pending: deque[tuple[int, Receipt | PoolReceipt]] = deque()

    def settle(block: bool) -> None:
        nonlocal accepted
        while pending and (block or pending[0][1].done()):
            number, receipt = pending.popleft()
            try:
                receipt.result()
            except BusError as err:
                failed[_outcome(err)] += 1
                error(f"{_where(number)} (id {receipt.id}): {_describe(err)}")
            else:
                accepted += 1

    unsent = 0
    pub: Publisher | PoolPublisher
    try:
        if len(endpoints) == 1 and not args.pool:
            pub = Publisher(
                endpoints[0],
                name=args.publisher,
                window=args.window,
                timeout=args.timeout,
                retry_deadline=args.retry_deadline or None,
            )
        else:
            pub = PoolPublisher(
                endpoints,
                name=args.publisher,
                window=args.window,
                timeout=args.timeout,
                attempt_timeout=args.attempt_timeout,
                retry_deadline=args.retry_deadline or None,
            )
    except ValueError as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)
    with pub:
        items = inputs if first is None else _chain(first, inputs)
        for number, data in items:
            try:
                receipt = pub.publish(args.topic, args.schema, args.version, data, id=args.id)
            except PublishTimeout as exc:
                error(f"{_where(number)}: {exc}; giving up at {pub.endpoint}")
                unsent += 1
                break
            pending.append((number, receipt))
            settle(block=False)
        settle(block=True)
    summary = {
        "accepted": accepted,
        "rejected": dict(failed),
        "bad_input": len(bad),
        "unsent": unsent,
    }
    text = ", ".join(f"{code} {n}" for code, n in sorted(failed.items()))
    print(
        f"busdctl pub: accepted {accepted}, failed {sum(failed.values())}"
        + (f" ({text})" if text else "")
        + (f", bad input {len(bad)}" if bad else "")
        + (f", not sent {unsent}" if unsent else ""),
        file=sys.stderr,
    )
    if args.json:
        print(dump_json(summary))
    if unsent or failed["timeout"]:
        return EXIT_UNREACHABLE
    return EXIT_OK if not failed and not bad else EXIT_FAILED


def _chain(
    first: tuple[int, dict[str, Any]], rest: Iterator[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    yield first
    yield from rest


def _print_gap(gap: Gap) -> None:
    """One line on stderr per loss the subscriber can see (docs/client.md "Gaps")."""
    if gap.kind == "epoch":
        was = f"{gap.previous:016x}" if gap.previous is not None else "unknown"
        line = (
            f"busdctl sub: busd restarted (epoch {was} -> {gap.epoch:016x}): messages in "
            "flight then may be lost"
        )
    else:
        line = (
            f"busdctl sub: gap on {gap.topic}: {gap.missing} message(s) lost "
            f"(expected #{gap.expected}, got #{gap.got}, epoch {gap.epoch:016x})"
        )
    print(line, file=sys.stderr, flush=True)


def run_sub(args: argparse.Namespace) -> int:
    """Print messages until ``--count`` or ``--timeout`` (or Ctrl-C).

    Error handling: libzmq reconnects to an endpoint that is down or went away, for ever;
    the loop only watches (cli/connections.py) and says so on stderr. Undecodable messages
    are skipped by the subscriber. A closed stdout ends the command quietly (main).
    """
    if args.count is not None and args.count < 1:
        return fail(args, "usage", "--count must be at least 1", EXIT_USAGE)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    received = 0
    out = sys.stdout
    try:
        endpoints = _endpoints(args, "sub")
    except (ValueError, PoolFileError, locate.LocateError) as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)
    ctx = MonitoredContext()
    interrupted = False
    try:
        sub = (
            Subscriber(endpoints[0], args.prefixes, context=ctx, on_gap=_print_gap)
            if len(endpoints) == 1 and not args.pool
            else PoolSubscriber(endpoints, args.prefixes, context=ctx, on_gap=_print_gap)
        )
        connections = Connections(ctx, endpoints, CONNECT_WARNING, "busdctl sub")
        with sub:
            try:
                while args.count is None or received < args.count:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    connections.check()
                    # Short waits, so the connection state is watched while no message comes.
                    message = sub.recv(0.25 if remaining is None else min(remaining, 0.25))
                    if message is None:
                        continue
                    out.write(dump_json(message.to_dict()) + "\n")
                    out.flush()
                    received += 1
            except KeyboardInterrupt:
                interrupted = True  # Ctrl-C (SIGINT): the counts below are still printed
            connections.check()
        connections.close()
    finally:
        ctx.destroy(linger=0)
    if isinstance(sub, PoolSubscriber):
        print(
            f"busdctl sub: {received} message(s) from {len(endpoints)} brokers, "
            f"{sub.duplicates} duplicate(s) dropped",
            file=sys.stderr,
        )
    if sub.gaps or sub.epoch_changes:
        print(
            f"busdctl sub: {sub.gaps} gap(s), {sub.missed} message(s) lost, "
            f"{sub.epoch_changes} busd restart(s) seen",
            file=sys.stderr,
        )
    if interrupted:
        return 130
    if received >= (args.count or 1):
        return EXIT_OK
    wanted = f"{received} of {args.count or 1} message(s)"
    if not connections.ever_connected:
        error(f"timed out after {args.timeout:g} s with {wanted}: never connected to busd")
        return EXIT_UNREACHABLE
    error(f"timed out after {args.timeout:g} s with {wanted}")
    return EXIT_FAILED
