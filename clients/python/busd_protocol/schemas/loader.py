"""Reading a schemas directory into raw sources (file I/O lives here and only here).

Layout (schemas/README.md)::

    DIR/<name>/meta.json      {"description": ..., "topics": [prefix, ...],
                               "versions": {"1": "deprecated", "2": "active"},
                               "assume_compatible": {"2": ["data.change"]},   (optional)
                               "state": {"key": ["app", "instance_id"], ...}} (optional,
                                                                 busd_protocol.schemas.state)
    DIR/<name>/v<N>.json      one JSON Schema document per version

Reading refuses what cannot be understood (bad JSON, a misnamed file, a malformed meta.json)
with ``SchemaLoadError`` naming the file. ``metadata_problems`` then lists inconsistencies
between meta.json and the version files; the compiled set refuses those too, the offline
checker reports them one per line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from busd_protocol.schemas.state import StateRule, parse_state, state_problems

STATUSES = ("active", "deprecated", "retired")
SCHEMA_NAME = re.compile(r"[a-z0-9._-]{1,64}")
_VERSION_FILE = re.compile(r"v([1-9][0-9]{0,8})\.json")
_VERSION_KEY = re.compile(r"[1-9][0-9]{0,8}")
_TOPIC_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_META_KEYS = frozenset({"description", "topics", "versions", "assume_compatible", "state"})
MAX_FILE_BYTES = 1 << 20


class SchemaLoadError(Exception):
    """A schemas directory that cannot be served; ``file`` says where, ``reason`` what."""

    def __init__(self, file: str, reason: str) -> None:
        self.file = file
        self.reason = reason
        super().__init__(f"{file}: {reason}")


@dataclass(frozen=True, slots=True)
class VersionSource:
    version: int
    path: str
    document: Any


@dataclass(frozen=True, slots=True)
class SchemaSource:
    """One schema as read from disk, not yet compiled."""

    name: str
    meta_path: str
    description: str
    topics: tuple[str, ...]
    statuses: dict[int, str]
    versions: dict[int, VersionSource]
    # version -> paths where `busd schemas check` may not decide and the operator vouches
    assumed: dict[int, tuple[str, ...]] = field(default_factory=dict)
    state: StateRule | None = None  # meta.json's ``state``: keyed state (docs/schemas.md)


def read_directory(directory: str | os.PathLike[str]) -> list[SchemaSource]:
    """Every schema under ``directory``, sorted by name. Dot-entries and top-level files
    (README.md) are skipped, and so are files not ending in ``.json`` inside a schema
    directory (editor backups, notes)."""
    root = os.fspath(directory)
    if not os.path.isdir(root):
        raise SchemaLoadError(root, "not a directory")
    sources = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if SCHEMA_NAME.fullmatch(entry.name) is None:
            raise SchemaLoadError(
                entry.path, "not a valid schema name (1-64 chars of a-z 0-9 . _ -)"
            )
        sources.append(_read_schema(entry.name, entry.path))
    return sources


def _read_schema(name: str, path: str) -> SchemaSource:
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isfile(meta_path):
        raise SchemaLoadError(meta_path, "missing: every schema needs a meta.json")
    versions: dict[int, VersionSource] = {}
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        if entry.name == "meta.json":
            continue
        match = _VERSION_FILE.fullmatch(entry.name)
        if match is None or not entry.is_file():
            raise SchemaLoadError(
                entry.path,
                "unexpected file: expected meta.json or v<N>.json (N from 1, no leading zeros)",
            )
        number = int(match.group(1))
        versions[number] = VersionSource(number, entry.path, read_json(entry.path))
    meta = read_json(meta_path)
    description, topics, statuses = _parse_meta(meta_path, meta)
    return SchemaSource(
        name,
        meta_path,
        description,
        topics,
        statuses,
        dict(sorted(versions.items())),
        _parse_assumed(meta_path, meta.get("assume_compatible", {})),
        _parse_state(meta_path, meta.get("state")),
    )


def _parse_state(path: str, value: Any) -> StateRule | None:
    if value is None:
        return None
    try:
        return parse_state(value)
    except ValueError as exc:
        raise SchemaLoadError(path, str(exc)) from None


def _parse_assumed(path: str, assumed: Any) -> dict[int, tuple[str, ...]]:
    """meta.json's ``assume_compatible``: {"<version>": ["<path>", ...]}."""
    shape = 'assume_compatible: expected an object like {"2": ["data.change"]}'
    if not isinstance(assumed, dict):
        raise SchemaLoadError(path, shape)
    parsed: dict[int, tuple[str, ...]] = {}
    for key, paths in assumed.items():
        if _VERSION_KEY.fullmatch(key) is None:
            raise SchemaLoadError(path, f"assume_compatible: {key!r} is not a version number")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise SchemaLoadError(path, shape)
        parsed[int(key)] = tuple(paths)
    return parsed


def _parse_meta(path: str, meta: Any) -> tuple[str, tuple[str, ...], dict[int, str]]:
    if not isinstance(meta, dict):
        raise SchemaLoadError(path, "expected a JSON object")
    unknown = sorted(set(meta) - _META_KEYS)
    if unknown:
        raise SchemaLoadError(
            path, f"unknown key {unknown[0]!r}; expected {', '.join(sorted(_META_KEYS))}"
        )
    description = meta.get("description", "")
    if not isinstance(description, str):
        raise SchemaLoadError(path, "description: expected a string")
    topics = meta.get("topics")
    if not isinstance(topics, list) or not topics:
        raise SchemaLoadError(path, "topics: expected a non-empty list of topic prefixes")
    for prefix in topics:
        if not isinstance(prefix, str):
            raise SchemaLoadError(path, f"topics: expected strings, got {prefix!r}")
        if len(prefix.encode()) > 255 or _TOPIC_FORBIDDEN.search(prefix):
            raise SchemaLoadError(
                path,
                f"topics: {prefix!r} is not a valid topic prefix "
                "(at most 255 bytes, no spaces or control characters)",
            )
    versions = meta.get("versions")
    if not isinstance(versions, dict):
        raise SchemaLoadError(path, 'versions: expected an object like {"1": "active"}')
    statuses: dict[int, str] = {}
    for key, status in versions.items():
        if _VERSION_KEY.fullmatch(key) is None:
            raise SchemaLoadError(
                path, f"versions: {key!r} is not a version number (from 1, no leading zeros)"
            )
        if status not in STATUSES:
            raise SchemaLoadError(
                path,
                f"versions: {key}: status must be one of {', '.join(STATUSES)}, got {status!r}",
            )
        statuses[int(key)] = status
    return description, tuple(dict.fromkeys(topics)), dict(sorted(statuses.items()))


def metadata_problems(sources: list[SchemaSource]) -> list[tuple[str, str]]:
    """(file, reason) for each version file without a status, status without a file, or gap
    in the numbering (versions run 1..N: retire a version, never delete its file), and each
    way a ``state`` declaration does not fit its active and deprecated versions."""
    problems: list[tuple[str, str]] = []
    for source in sources:
        for number, version in source.versions.items():
            if number not in source.statuses:
                problems.append((version.path, f"version {number} has no status in meta.json"))
        for number in source.statuses:
            if number not in source.versions:
                problems.append(
                    (source.meta_path, f"version {number} has a status but no file v{number}.json")
                )
        numbers = set(source.statuses) | set(source.versions)
        if not numbers:
            problems.append((source.meta_path, "no versions"))
            continue
        missing = [n for n in range(1, max(numbers)) if n not in numbers]
        if missing:
            problems.append(
                (
                    source.meta_path,
                    "versions must run from 1 without gaps; missing "
                    + ", ".join(map(str, missing)),
                )
            )
        if source.state is not None:
            usable = {
                n: (status, v.path, v.document)
                for n, v in source.versions.items()
                if (status := source.statuses.get(n, "retired")) != "retired"
            }
            problems += state_problems(source.state, source.meta_path, usable)
    return problems


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def read_json(path: str) -> Any:
    """A strict JSON file: UTF-8, no duplicate keys, no NaN or Infinity, at most 1 MiB."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SchemaLoadError(path, f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise SchemaLoadError(path, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaLoadError(path, f"not UTF-8: byte {exc.start}") from exc
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise SchemaLoadError(
            path, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise SchemaLoadError(path, f"invalid JSON: {exc}") from exc
