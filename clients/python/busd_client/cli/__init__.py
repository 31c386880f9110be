"""busdctl: the command-line client. One module per group of commands.

Its name is busdctl, not busctl: /usr/bin/busctl is systemd's D-Bus tool on every systemd
host. ``busctl`` stays as a deprecated alias inside the virtualenv (``deprecated_main``).

Each command module exposes ``register(subparsers)`` adding its subcommands; a subcommand
sets ``func`` (taking the parsed args, returning an exit status from cli/exits.py) with
``set_defaults``. Where busd is comes from cli/locate.py, in one order for every command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from busd_client import __version__
from busd_client.cli.common import dump_json
from busd_client.cli.exits import EXIT_USAGE, epilog
from busd_client.cli.locate import DISCOVERY
from busd_protocol.frames import PROTOCOL_VERSION

PROG = "busdctl"
# Command modules, in the order `busdctl --help` lists them.
_COMMAND_MODULES = (
    "status",
    "pubsub",
    "state",
    "control",
    "stats",
    "top",
    "pool",
    "keys",
    "completion",
)


class UsageError(Exception):
    """Bad arguments, found by argparse; reported by ``main`` (as JSON under --json)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised to ``main`` instead of printed and exited."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Talk to a busd message bus.",
        epilog=f"{DISCOVERY}\n\n{epilog()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {__version__} (busd-client {__version__}, protocol {PROTOCOL_VERSION})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"busd_client.cli.{name}").register(sub)
    parser.set_defaults(root_parser=parser)
    return parser


def deprecated_main(argv: Sequence[str] | None = None) -> int:
    """The old name: a one-line notice on stderr, then busdctl itself."""
    print(
        f"busctl: deprecated name, use {PROG} (busctl is systemd's D-Bus tool); this alias will go",
        file=sys.stderr,
    )
    return main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
    except UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        if "--json" in args_list:
            print(dump_json({"ok": False, "error": {"code": "usage", "message": exc.message}}))
        return EXIT_USAGE
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed by the reader (e.g. `busdctl sub | head`): not an error of ours.
        sys.stderr.close()
        return 0
    return status
