"""The ``busd`` command: a thin entry point over ``busd.app``; exit statuses in
``busd.preflight`` (docs/operations.md §6)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from busd import __version__, logs
from busd.app import App
from busd.config import ConfigError, add_arguments, describe, load
from busd.preflight import (
    EXIT_CONFIG,
    EXIT_FORCED,
    EXIT_OK,
    EXIT_SOFTWARE,
    EXIT_UNAVAILABLE,
    problems,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="busd",
        description="busd: a brokered publish/subscribe message bus over ZeroMQ. "
        "Settings come from defaults, then --config FILE (TOML, keys as below "
        "with underscores), then BUSD_<KEY> environment variables, then flags.",
        epilog="Subcommand: `busd schemas check DIR` checks schema evolution offline. "
        f"Exit status: {EXIT_OK} stopped normally, {EXIT_FORCED} forced (second SIGINT), "
        f"2 usage, {EXIT_UNAVAILABLE} cannot bind (worth retrying), {EXIT_SOFTWARE} software "
        f"failure, {EXIT_CONFIG} bad configuration.",
    )
    parser.add_argument("--version", action="version", version=f"busd {__version__}")
    parser.add_argument("--config", help="TOML configuration file", default=None)
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check everything start-up checks without binding anything, print the effective "
        f"configuration as JSON and exit ({EXIT_OK} valid, {EXIT_CONFIG} invalid: the problems "
        "on stderr)",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["schemas"]:
        from busd import schemacheck  # noqa: PLC0415 - offline tool, not needed to serve

        return schemacheck.main(args_list[1:])
    args = build_parser().parse_args(args_list)  # exits 2 on a usage error
    config_file = args.config or os.environ.get("BUSD_CONFIG")
    try:
        config = load(vars(args), os.environ, config_file)
    except ConfigError as exc:
        print(f"busd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        found = problems(config)
        for problem in found:
            print(f"busd: configuration error: {problem}", file=sys.stderr)
        if found:
            return EXIT_CONFIG
        print(json.dumps(describe(config), indent=2, allow_nan=False))
        return EXIT_OK
    logs.setup(config.log_format, config.log_level)
    app = App(config)
    status: int
    try:
        if config.loop == "uvloop":
            import uvloop  # noqa: PLC0415 - optional at import time, chosen by config

            status = uvloop.run(app.serve())
        else:
            status = asyncio.run(app.serve())
    except Exception:  # a bug that escaped serve (closing, say): 70, not Python's 1 (forced)
        logs.get("app").critical("crashed", exc_info=True)
        return EXIT_SOFTWARE
    return status
