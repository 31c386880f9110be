"""busdctl top: a live view of one busd, from its metrics endpoint, as an operator watches a
deploy or a restart.

Every ``--interval`` seconds it scrapes busd and shows rates over the last interval:
messages in/out, rejects by code, throttles by rate key, connections, p50/p99 processing
latency and the assertions (cli/stats.py renders the frame). A scrape that fails shows a
"DOWN" frame (since when, how many tries, why) and the next one tries again: a busd that
restarts comes back on screen by itself. On a terminal, ``q`` quits (the terminal is put in
cbreak mode and restored on exit), as does Ctrl-C. ``--once`` prints one frame (two scrapes
one interval apart) and exits.

Exit status: 0 quit by ``q`` or ``--once`` done; 3 ``--once`` could not read the endpoint;
130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any, TextIO

from busd_client.cli import locate
from busd_client.cli.common import add_metrics, fail
from busd_client.cli.exits import EXIT_OK, EXIT_UNREACHABLE
from busd_client.cli.stats import Summary, metrics_address, read_summary, render_frame

__all__ = ["register", "render_down"]

_CLEAR = "\x1b[H\x1b[2J"


def register(subparsers: Any) -> None:
    top = subparsers.add_parser(
        "top",
        help="live view: rates, rejects, throttles, connections, latency",
        description="A live view refreshed every INTERVAL seconds, read from busd's metrics "
        "endpoint. While busd does not answer it shows DOWN and keeps trying. q (or Ctrl-C) "
        "quits.",
    )
    add_metrics(top)
    top.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="refresh interval (default %(default)s)",
    )
    top.add_argument(
        "--once", action="store_true", help="print one frame (rates over one interval) and exit"
    )
    top.set_defaults(func=run_top)


def render_down(address: str, problem: str, since: float, tries: int, interval: float) -> str:
    """The frame shown while busd does not answer (``since``: wall time of the first miss)."""
    first = datetime.datetime.fromtimestamp(since).strftime("%H:%M:%S")
    return (
        f"busd at {address}   DOWN   no answer since {first} ({tries} tries)\n\n"
        f"  {problem}\n\n"
        f"  trying again every {interval:g} s; q quits\n"
    )


class Keys:
    """Single key presses from a terminal on ``stream``; nothing when it is not a terminal.

    Error handling: a terminal that goes away (EOF, EIO) ends key reading; the view goes on
    until Ctrl-C. The terminal's settings are restored however the view ends.
    """

    def __init__(self, stream: TextIO) -> None:
        self.fd = stream.fileno() if stream.isatty() else None
        self._saved: list[Any] | None = None

    @contextlib.contextmanager
    def cbreak(self) -> Iterator[Keys]:
        if self.fd is not None:
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        try:
            yield self
        finally:
            if self.fd is not None and self._saved is not None:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def quit_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True as soon as ``q`` is pressed."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.fd is None:
                time.sleep(left)
                return False
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            try:
                key = os.read(self.fd, 1)
            except OSError:
                key = b""
            if not key:  # the terminal is gone: no more keys
                self.fd = None
            elif key in (b"q", b"Q"):
                return True
        return False


def run_top(args: argparse.Namespace) -> int:
    """The live view's loop: scrape, draw, wait for ``q`` or the next interval.

    Error handling: a scrape that fails (refused, timed out, a bad answer) is drawn as
    DOWN and retried at the next interval, for ever; Ctrl-C ends it (130). Anything else
    (a bug, a closed stdout) ends the command with its traceback or status.
    """
    interval = max(0.1, args.interval)
    found = metrics_address(args)
    if isinstance(found, int):
        return found
    if args.once:
        return _once(args, found, interval)
    out = sys.stdout
    clear = out.isatty()
    previous: Summary | None = None
    down_since, tries = 0.0, 0
    with Keys(sys.stdin).cbreak() as keys:
        while True:
            current: Summary | None = None
            try:
                current = read_summary(found, timeout=max(1.0, interval))
            except OSError as exc:
                if not tries:
                    down_since = time.time()
                tries += 1
                frame = render_down(found.value, str(exc), down_since, tries, interval)
            else:
                tries = 0
                frame = render_frame(current, previous, found.value)
            out.write((_CLEAR + frame) if clear else frame + "\n")
            out.flush()
            previous = current
            if keys.quit_within(interval):
                return EXIT_OK


def _once(args: argparse.Namespace, found: locate.Found, interval: float) -> int:
    try:
        previous = read_summary(found)
        time.sleep(interval)
        current = read_summary(found)
    except OSError as exc:
        return fail(args, "unavailable", str(exc), EXIT_UNREACHABLE)
    sys.stdout.write(render_frame(current, previous, found.value))
    return EXIT_OK
