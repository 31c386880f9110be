"""busctl pub and busctl sub."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from busd_client.cli.common import (
    add_json,
    add_pub_endpoint,
    add_sub_endpoint,
    dump_json,
    error,
)
from busd_client.errors import BusError, PublishTimeout, Rejected
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
        "--publisher", default="busctl", metavar="NAME", help="publisher name (default %(default)s)"
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


def _endpoints(args: argparse.Namespace, which: str) -> list[str]:
    """The broker endpoints to use: the pool file's, or the comma-separated option."""
    if args.pool:
        return [getattr(entry, which) for entry in load_pool(args.pool)]
    return pool_endpoints(getattr(args, which))


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
        error("--id needs --data (stdin lines get generated ids)")
        return 2
    bad: list[str] = []
    try:
        inputs = _inputs(args, bad)
        first = next(inputs, None)
    except ValueError as exc:
        error(f"--data: not a JSON object: {exc}")
        return 2
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
        endpoints = _endpoints(args, "pub_endpoint")
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
    except (ValueError, PoolFileError) as exc:
        error(str(exc))
        return 2
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
        f"busctl pub: accepted {accepted}, failed {sum(failed.values())}"
        + (f" ({text})" if text else "")
        + (f", bad input {len(bad)}" if bad else "")
        + (f", not sent {unsent}" if unsent else ""),
        file=sys.stderr,
    )
    if args.json:
        print(dump_json(summary))
    return 0 if not failed and not bad and not unsent else 1


def _chain(
    first: tuple[int, dict[str, Any]], rest: Iterator[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    yield first
    yield from rest


def run_sub(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        error("--count must be at least 1")
        return 2
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    received = 0
    out = sys.stdout
    try:
        endpoints = _endpoints(args, "sub_endpoint")
    except (ValueError, PoolFileError) as exc:
        error(str(exc))
        return 2
    sub = (
        Subscriber(endpoints[0], args.prefixes)
        if len(endpoints) == 1 and not args.pool
        else PoolSubscriber(endpoints, args.prefixes)
    )
    with sub:
        while args.count is None or received < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            message = sub.recv(remaining)
            if message is None:
                break
            out.write(dump_json(message.to_dict()) + "\n")
            out.flush()
            received += 1
    if isinstance(sub, PoolSubscriber):
        print(
            f"busctl sub: {received} message(s) from {len(endpoints)} brokers, "
            f"{sub.duplicates} duplicate(s) dropped",
            file=sys.stderr,
        )
    if received >= (args.count or 1):
        return 0
    error(f"timed out after {args.timeout:g} s with {received} of {args.count or 1} message(s)")
    return 1
