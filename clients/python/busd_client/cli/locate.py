"""Where busd is: one discovery order for the control socket, the metrics endpoint and the
message endpoints, so that on a host installed per deploy/README.md no flag is needed.

The order, for each address (``DISCOVERY`` says the same in ``busdctl --help``):

1. its flag: ``--control``, ``--metrics``, ``--pub-endpoint``, ``--sub-endpoint``,
   ``--state-endpoint``;
2. its environment variable: ``BUSD_CONTROL``, ``BUSD_METRICS``, ``BUSD_PUB_ENDPOINT``,
   ``BUSD_SUB_ENDPOINT``, ``BUSD_STATE_ENDPOINT`` (the names busd itself reads);
3. busd's configuration file: ``--config FILE``, else ``$BUSD_CONFIG``, else
   ``/etc/busd/busd.toml`` when it exists; its ``control`` key (or ``VAR_DIR/run/control.sock``
   when it sets only ``var_dir``), ``metrics``, ``pub_endpoint``, ``sub_endpoint``,
   ``state_endpoint``;
4. the control socket only: ``/run/busd/control.sock`` when it exists (the systemd unit's);
5. the built-in defaults, those of ``make run``: ``./var/run/control.sock``,
   ``127.0.0.1:7403``, ``tcp://127.0.0.1:7401``, ``tcp://127.0.0.1:7402``,
   ``tcp://127.0.0.1:7404``.

The configuration file is read here with ``tomllib``, for those few keys only: busd_client
never imports busd, so this module knows busd.config's key names and defaults, not its code
(a key busd does not know is busd's to refuse). A file that was named or found but cannot be
read is an error (exit 2), never silently skipped. A bind address becomes one to connect to
(``0.0.0.0`` or ``*`` -> ``127.0.0.1``, ``[::]`` -> ``[::1]``); relative paths are taken from
the current directory.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busd_protocol.snapshots import DEFAULT_STATE_ENDPOINT

__all__ = [
    "DISCOVERY",
    "ETC_CONFIG",
    "RUN_CONTROL",
    "Found",
    "LocateError",
    "add_config",
    "control",
    "endpoint",
    "metrics",
]

ETC_CONFIG = "/etc/busd/busd.toml"
RUN_CONTROL = "/run/busd/control.sock"
DEFAULT_CONTROL = "./var/run/control.sock"
DEFAULT_METRICS = "127.0.0.1:7403"
DEFAULT_ENDPOINTS = {
    "pub": "tcp://127.0.0.1:7401",
    "sub": "tcp://127.0.0.1:7402",
    "state": DEFAULT_STATE_ENDPOINT,
}

DISCOVERY = """\
finding busd (first found wins, for each address):
  1  --control, --metrics, --pub-endpoint, --sub-endpoint, --state-endpoint
  2  $BUSD_CONTROL, $BUSD_METRICS, $BUSD_PUB_ENDPOINT, $BUSD_SUB_ENDPOINT,
     $BUSD_STATE_ENDPOINT
  3  busd's configuration file: --config FILE, else $BUSD_CONFIG, else /etc/busd/busd.toml
     if it exists; its keys control (else VAR_DIR/run/control.sock), metrics, pub_endpoint,
     sub_endpoint, state_endpoint
  4  /run/busd/control.sock if it exists (the control socket of the systemd unit)
  5  ./var/run/control.sock, 127.0.0.1:7403, tcp://127.0.0.1:7401, tcp://127.0.0.1:7402,
     tcp://127.0.0.1:7404 (make run)"""


class LocateError(Exception):
    """busd's configuration file was named or found but cannot be used; says which and why."""


@dataclass(frozen=True, slots=True)
class Found:
    """An address and where it came from (for messages: "... (from /etc/busd/busd.toml)")."""

    value: str
    source: str

    def __str__(self) -> str:
        return self.value

    def where(self) -> str:
        return f"{self.value} (from {self.source})"


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="busd's configuration file to find busd by (env BUSD_CONFIG; default "
        f"{ETC_CONFIG} if it exists)",
    )


def _daemon_config(args: argparse.Namespace) -> tuple[dict[str, Any], str] | None:
    """busd's configuration (the keys as read) and its path; None when there is none."""
    path = getattr(args, "config", None)
    if not path:
        path = os.environ.get("BUSD_CONFIG")
    if not path:
        if not Path(ETC_CONFIG).is_file():
            return None
        path = ETC_CONFIG
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh), path
    except OSError as exc:
        raise LocateError(f"busd configuration {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LocateError(f"busd configuration {path}: not valid TOML: {exc}") from None


def _key(config: dict[str, Any], path: str, key: str) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LocateError(f"busd configuration {path}: {key} must be a string")
    return value


def _given(args: argparse.Namespace, attr: str, env: str) -> Found | None:
    flag = getattr(args, attr, None)
    if flag:
        return Found(str(flag), "--" + attr.replace("_", "-"))
    if os.environ.get(env):
        return Found(os.environ[env], env)
    return None


def control(args: argparse.Namespace) -> Found:
    """The control socket path to use."""
    given = _given(args, "control", "BUSD_CONTROL")
    if given is not None:
        return given
    found = _daemon_config(args)
    if found is not None:
        config, path = found
        if (value := _key(config, path, "control")) is not None:
            return Found(value, path)
        if (var_dir := _key(config, path, "var_dir")) is not None:
            return Found(str(Path(var_dir) / "run" / "control.sock"), f"{path} var_dir")
    if Path(RUN_CONTROL).exists():
        return Found(RUN_CONTROL, "the systemd unit's runtime directory")
    return Found(DEFAULT_CONTROL, "the default")


def metrics(args: argparse.Namespace) -> Found:
    """The metrics endpoint as HOST:PORT to connect to, or ``off`` when busd serves none."""
    given = _given(args, "metrics", "BUSD_METRICS")
    if given is not None:
        return Found(connect_address(given.value), given.source)
    found = _daemon_config(args)
    if found is not None:
        config, path = found
        if (value := _key(config, path, "metrics")) is not None:
            return Found("off" if value == "off" else connect_address(value), path)
    return Found(DEFAULT_METRICS, "the default")


def endpoint(args: argparse.Namespace, which: str) -> Found:
    """The ``pub``, ``sub`` or ``state`` endpoint (or comma-separated list) to connect to."""
    given = _given(args, f"{which}_endpoint", f"BUSD_{which.upper()}_ENDPOINT")
    if given is not None:
        return given
    found = _daemon_config(args)
    if found is not None:
        config, path = found
        if (value := _key(config, path, f"{which}_endpoint")) is not None:
            return Found(connect_endpoint(value), path)
    return Found(DEFAULT_ENDPOINTS[which], "the default")


# A wildcard bind is reached through loopback on the same host.
_WILDCARD = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}  # noqa: S104


def connect_address(address: str) -> str:
    """HOST:PORT busd binds -> HOST:PORT to connect to (a wildcard host means loopback)."""
    host, sep, port = address.rpartition(":")
    return f"{_WILDCARD.get(host, host)}{sep}{port}" if sep else address


def connect_endpoint(endpoint: str) -> str:
    """tcp://HOST:PORT busd binds -> the endpoint to connect to; other transports as they are."""
    match = re.fullmatch(r"tcp://(.+):(\d+)", endpoint)
    if match is None:
        return endpoint
    return f"tcp://{_WILDCARD.get(match.group(1), match.group(1))}:{match.group(2)}"
