"""Checking a configuration before anything is bound, and the exit status of every way out.

``busd --check-config`` runs ``problems(config)`` and so does start-up, first, so what the
check passes start-up does not refuse for the same reason (the unit runs it as
``ExecStartPre``). Nothing here binds a socket or creates a file: directories are checked
to be usable or creatable, the schemas directory and the assertions file are loaded with
the functions start-up uses (a few milliseconds, read twice at start-up for that promise).

Exit statuses (sysexits.h where one fits; docs/operations.md §6 is the same table):

===  ===================  ==========================================================
0    ``EXIT_OK``          drained and stopped
1    ``EXIT_FORCED``      a second SIGINT
2    (argparse's own)     unknown flag or subcommand
69   ``EXIT_UNAVAILABLE`` an endpoint, the control socket or the metrics port cannot be
                          bound now (taken, another live busd, address not on this host)
70   ``EXIT_SOFTWARE``    a bug: the broker crashed, a task crashed past its restart budget,
                          or start-up failed for a reason that is neither of the others
78   ``EXIT_CONFIG``      the configuration is wrong: a bad setting, a schemas directory or
                          assertions file that does not load, an unusable path
===  ===================  ==========================================================

69 is worth restarting (a port freed, an address that comes up); 78 is not: nothing
changes until an operator edits something (``RestartPreventExitStatus=78``).
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import zmq

from busd.config import Config, ConfigError
from busd.control.server import MAX_SUN_PATH, ControlSocketError
from busd.control.trust import TrustError, read_acl, read_keys, server_keys
from busd.ops import build
from busd.ops.assertion_rules import AssertionConfigError
from busd.ops.assertions import load_file
from busd.schemacheck import load_checked
from busd.transport.sockets import EndpointInUse
from busd_protocol.schemas import SchemaLoadError

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_UNAVAILABLE = 69
EXIT_SOFTWARE = 70
EXIT_CONFIG = 78

# libzmq's answer to an endpoint it cannot parse: a configuration error, not a busy port.
_BAD_ENDPOINT = frozenset({zmq.EINVAL, zmq.EPROTONOSUPPORT, zmq.ENOCOMPATPROTO})


class BadConfig(Exception):
    """The configuration cannot work; ``problems`` names each setting and why."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def check(config: Config) -> None:
    """Raise ``BadConfig`` listing every problem ``problems`` finds."""
    found = problems(config)
    if found:
        raise BadConfig(found)


def problems(config: Config) -> list[str]:
    """Everything start-up would refuse in this configuration, binding nothing."""
    found = [
        p
        for p in (
            _directory("var_dir", Path(config.var_dir), write=True),
            _directory("rates_dir", config.rates_path, write=False),
            _socket_path("control", config.control_path),
            *(
                _endpoint(name, getattr(config, name))
                for name in ("pub_endpoint", "sub_endpoint", "state_endpoint")
            ),
            _metrics(config),
        )
        if p
    ]
    found.extend(build.refusals())  # the dependency floor: an old libzmq is not run on
    try:
        load_checked(config.schemas_dir)
    except SchemaLoadError as exc:
        found.append(f"schemas_dir: {exc}")
    if config.assertions:
        try:
            load_file(config.assertions)
        except AssertionConfigError as exc:
            found.append(f"assertions: {exc}")
    if config.authenticated:
        try:
            server_keys(config.curve_secret)
            read_keys(config.keys_path)
            if config.acl:
                read_acl(config.acl)
        except TrustError as exc:
            found.append(f"trust: {exc}")
    return found


def exit_status(exc: BaseException) -> int:
    """The exit status for a start-up that raised ``exc``."""
    if isinstance(
        exc, BadConfig | ConfigError | SchemaLoadError | AssertionConfigError | TrustError
    ):
        return EXIT_CONFIG
    if isinstance(exc, zmq.ZMQError) and exc.errno in _BAD_ENDPOINT:
        return EXIT_CONFIG
    if isinstance(exc, OSError | zmq.ZMQError | EndpointInUse | ControlSocketError):
        return EXIT_UNAVAILABLE
    return EXIT_SOFTWARE


def _directory(name: str, path: Path, *, write: bool) -> str | None:
    """None when ``path`` is a usable directory, or could be created; else why not."""
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if path.exists():
        if not path.is_dir():
            return f"{name}: {path} exists and is not a directory"
        if not os.access(path, mode):
            return f"{name}: {path} is not {'writable' if write else 'readable'}"
        return None
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{name}: cannot create {path}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{name}: cannot create {path}: {parent} is not writable"
    return None


def _socket_path(name: str, path: Path) -> str | None:
    """A Unix socket path busd can bind: short enough, not another kind of file."""
    if len(os.fsencode(path)) > MAX_SUN_PATH:
        return f"{name}: socket path {path} is over {MAX_SUN_PATH} bytes"
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return _directory(name, path.parent, write=True)
    except OSError as exc:
        return f"{name}: cannot check {path}: {exc.strerror}"
    if not stat.S_ISSOCK(mode):
        return f"{name}: {path} exists and is not a socket"
    return None  # a socket: start-up replaces it if stale, refuses it if live (exit 69)


def _endpoint(name: str, endpoint: str) -> str | None:
    if endpoint.startswith("ipc://"):
        return _socket_path(name, Path(endpoint[len("ipc://") :]))
    return None  # tcp:// syntax is Config.validate's; whether it binds is start-up's (69)


def _metrics(config: Config) -> str | None:
    address = config.metrics_address
    if address is None:
        return None
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"metrics: {host!r} is not an address of this host's kind: {exc}"
    return None
