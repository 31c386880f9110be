"""Options and output shared by the busdctl command modules: where busd is (resolved by
cli/locate.py in one documented order), --json, and errors that are JSON under --json."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from busd_client.cli.locate import add_config

__all__ = [
    "add_control",
    "add_json",
    "add_metrics",
    "add_pub_endpoint",
    "add_state_endpoint",
    "add_sub_endpoint",
    "dump_json",
    "error",
    "fail",
]

_FOUND = "default: see 'finding busd' in busdctl --help"


def add_pub_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pub-endpoint",
        metavar="ENDPOINT",
        help=f"publisher ingress endpoint (env BUSD_PUB_ENDPOINT; {_FOUND})",
    )
    _add_config_once(parser)


def add_sub_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sub-endpoint",
        metavar="ENDPOINT",
        help=f"subscriber egress endpoint (env BUSD_SUB_ENDPOINT; {_FOUND})",
    )
    _add_config_once(parser)


def add_state_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-endpoint",
        metavar="ENDPOINT",
        help=f"state snapshot endpoint (env BUSD_STATE_ENDPOINT; {_FOUND})",
    )
    _add_config_once(parser)


def add_control(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control", metavar="PATH", help=f"busd control socket (env BUSD_CONTROL; {_FOUND})"
    )
    _add_config_once(parser)


def add_metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help=f"busd metrics endpoint (env BUSD_METRICS; {_FOUND})",
    )
    _add_config_once(parser)


def _add_config_once(parser: argparse.ArgumentParser) -> None:
    if not any("--config" in action.option_strings for action in parser._actions):
        add_config(parser)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of text (errors too: {ok: false, error: {code, message}})",
    )


def _json_default(value: Any) -> Any:
    # msgpack bin values have no JSON form: show them as base64 text.
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dump_json(value: Any) -> str:
    """One line of JSON; bytes become base64 strings."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def error(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"busdctl: {message}", file=sys.stderr)


def fail(args: argparse.Namespace, code: str, message: str, status: int) -> int:
    """Report a failure and return ``status``: one line on stderr and, under ``--json``,
    ``{"ok": false, "error": {"code": CODE, "message": MESSAGE}}`` on stdout, so a script
    reading stdout always gets JSON."""
    error(message)
    if getattr(args, "json", False):
        print(dump_json({"ok": False, "error": {"code": code, "message": message}}))
    return status
