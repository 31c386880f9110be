"""Options shared by the busctl command modules: endpoints and paths with env defaults."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

__all__ = [
    "DEFAULT_CONTROL",
    "DEFAULT_PUB_ENDPOINT",
    "DEFAULT_SUB_ENDPOINT",
    "add_control",
    "add_json",
    "add_pub_endpoint",
    "add_sub_endpoint",
    "dump_json",
    "env_default",
    "error",
]

DEFAULT_PUB_ENDPOINT = "tcp://127.0.0.1:7401"
DEFAULT_SUB_ENDPOINT = "tcp://127.0.0.1:7402"
DEFAULT_CONTROL = "./var/run/control.sock"


def env_default(var: str, default: str) -> str:
    """``$var`` when set and not empty, else ``default``."""
    return os.environ.get(var) or default


def add_pub_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pub-endpoint",
        default=env_default("BUSD_PUB_ENDPOINT", DEFAULT_PUB_ENDPOINT),
        metavar="ENDPOINT",
        help="publisher ingress endpoint (env BUSD_PUB_ENDPOINT; default %(default)s)",
    )


def add_sub_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sub-endpoint",
        default=env_default("BUSD_SUB_ENDPOINT", DEFAULT_SUB_ENDPOINT),
        metavar="ENDPOINT",
        help="subscriber egress endpoint (env BUSD_SUB_ENDPOINT; default %(default)s)",
    )


def add_control(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control",
        default=env_default("BUSD_CONTROL", DEFAULT_CONTROL),
        metavar="PATH",
        help="busd control socket (env BUSD_CONTROL; default %(default)s)",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


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
    print(f"busctl: {message}", file=sys.stderr)
