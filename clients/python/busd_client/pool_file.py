"""The pool file: which brokers make up a pool, and how to reach and restart each (TOML).

    [[broker]]
    name = "bus1"                                    # required, unique, [A-Za-z0-9._-]{1,64}
    pub_endpoint = "tcp://10.0.0.1:7401"             # required
    sub_endpoint = "tcp://10.0.0.1:7402"             # required
    state_endpoint = "tcp://10.0.0.1:7404"           # snapshots of keyed state (StateView)
    metrics = "10.0.0.1:7403"                        # host:port of /metrics and /readyz
    control = "/run/busd/control.sock"               # control socket on this host
    restart = "ssh bus1 sudo systemctl restart busd" # shell command for a rolling restart

The file is read strictly: an unknown key, a missing or mistyped field, a duplicate name or
address is an error (``PoolFileError``) naming the file, the broker and the field, because a
typo in a pool file would otherwise silently leave a broker out of an operation.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["POOL_ENV", "PoolEntry", "PoolFileError", "load_pool", "pool_from_args"]

POOL_ENV = "BUSD_POOL"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENDPOINT = re.compile(r"(tcp|ipc|inproc|ws|wss)://\S+")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")
_REQUIRED = ("name", "pub_endpoint", "sub_endpoint")


@dataclass(frozen=True)
class PoolEntry:
    """One broker of a pool; the optional fields are None when the file leaves them out."""

    name: str
    pub_endpoint: str
    sub_endpoint: str
    metrics: str | None = None
    control: str | None = None
    restart: str | None = None
    state_endpoint: str | None = None


_FIELDS = tuple(f.name for f in fields(PoolEntry))


class PoolFileError(ValueError):
    """The pool file cannot be used: ``file`` and ``reason`` say where and why."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}" if file else reason)
        self.file = file
        self.reason = reason


def _where(index: int, table: dict[str, Any]) -> str:
    name = table.get("name")
    return f"broker #{index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")


def _check_value(key: str, value: str) -> str | None:
    """The problem with ``value`` for field ``key``, or None."""
    if not value.strip():
        return "is empty"
    if key == "name" and not _NAME.fullmatch(value):
        return "must be 1-64 characters of A-Z a-z 0-9 . _ -"
    if key in ("pub_endpoint", "sub_endpoint", "state_endpoint") and not _ENDPOINT.fullmatch(value):
        return "must be a ZeroMQ endpoint such as tcp://HOST:PORT or ipc://PATH"
    if key == "metrics":
        match = _HOST_PORT.fullmatch(value)
        if match is None or not 0 < int(match.group(2)) < 65536:
            return "must be HOST:PORT (the busd metrics address, port 1-65535)"
    if "\n" in value or "\x00" in value:
        return "must be one line"
    return None


def _entry(index: int, table: Any, file: str) -> PoolEntry:
    if not isinstance(table, dict):
        raise PoolFileError(file, f"broker #{index + 1}: must be a table ([[broker]])")
    where = _where(index, table)
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise PoolFileError(
            file, f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_FIELDS)})"
        )
    for key in _REQUIRED:
        if key not in table:
            raise PoolFileError(file, f"{where}: missing required field {key!r}")
    for key, value in table.items():
        if not isinstance(value, str):
            raise PoolFileError(
                file, f"{where}: field {key!r} must be a string, not {type(value).__name__}"
            )
        problem = _check_value(key, value)
        if problem is not None:
            raise PoolFileError(file, f"{where}: field {key!r} {problem}: {value[:200]!r}")
    return PoolEntry(**table)


def load_pool(path: str | os.PathLike[str]) -> list[PoolEntry]:
    """The brokers listed in the pool file at ``path``, in file order."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise PoolFileError(file, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PoolFileError(file, f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise PoolFileError(file, f"not UTF-8: {exc}") from None
    unknown = sorted(set(data) - {"broker"})
    if unknown:
        raise PoolFileError(
            file, f"unknown top-level key {unknown[0]!r} (a pool file holds only [[broker]] tables)"
        )
    tables = data.get("broker")
    if tables is None:
        raise PoolFileError(file, "no brokers: add at least one [[broker]] table")
    if not isinstance(tables, list):
        raise PoolFileError(file, "'broker' must be an array of tables ([[broker]])")
    if not tables:
        raise PoolFileError(file, "no brokers: add at least one [[broker]] table")
    entries = [_entry(i, table, file) for i, table in enumerate(tables)]
    # Two entries for one broker would double-count it (and restart it twice): refuse.
    for key in ("name", "pub_endpoint", "sub_endpoint", "state_endpoint", "metrics", "control"):
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            value = getattr(entry, key)
            if value is None:
                continue
            if value in seen:
                raise PoolFileError(
                    file,
                    f"broker #{i + 1} ({entry.name!r}): field {key!r} duplicates "
                    f"broker #{seen[value] + 1} ({entries[seen[value]].name!r}): "
                    f"{value!r}",
                )
            seen[value] = i
    return entries


def pool_from_args(args: argparse.Namespace) -> list[PoolEntry]:
    """The pool named by ``args.pool`` (busdctl ``--pool FILE``), else by ``$BUSD_POOL``."""
    path = getattr(args, "pool", None) or os.environ.get(POOL_ENV)
    if not path:
        raise PoolFileError("", f"no pool file: give --pool FILE or set {POOL_ENV}")
    return load_pool(Path(path))
