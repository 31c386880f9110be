"""busctl: the command-line client. One module per group of commands.

Each command module exposes ``register(subparsers)`` adding its subcommands; a subcommand
sets ``func`` (taking the parsed args, returning an exit status) with ``set_defaults``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Command modules, in the order `busctl --help` lists them. Modules not yet present are skipped
# so the command groups can land one at a time.
_COMMAND_MODULES = ("pubsub", "control", "stats", "pool", "keys")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busctl", description="Talk to a busd message bus.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"busd_client.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"busd_client.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed by the reader (e.g. `busctl sub | head`): not an error of ours.
        sys.stderr.close()
        return 0
    return status
