"""A compiled, immutable set of schemas: the one judge of payloads, for busd and clients.

busd and the Python client run this same code on the same files, so a client checking
before it sends gets exactly the code and reason busd would answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

from busd_protocol.codes import Code
from busd_protocol.schemas.codegen import FastCheck, compile_fast
from busd_protocol.schemas.compiler import Compiler
from busd_protocol.schemas.loader import (
    SchemaLoadError,
    SchemaSource,
    metadata_problems,
    read_directory,
)
from busd_protocol.schemas.state import StateRule
from busd_protocol.schemas.values import Checker, SchemaError, show

# The codes a schema check answers with (defined in busd_protocol.codes).
UNKNOWN_SCHEMA = Code.UNKNOWN_SCHEMA
UNKNOWN_VERSION = Code.UNKNOWN_VERSION
RETIRED_VERSION = Code.RETIRED_VERSION
SCHEMA_NOT_ALLOWED = Code.SCHEMA_NOT_ALLOWED
INVALID = Code.INVALID

Verdict = tuple[str, str]  # (code, reason)
# A usable (not retired) version's accept path: its topic prefixes, its fast check, and
# whether it is deprecated. ``fast(data)`` True means valid; False means "ask ``check``".
Route = tuple[tuple[str, ...], FastCheck, bool]


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    status: str


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    name: str
    description: str
    topics: tuple[str, ...]
    versions: tuple[VersionInfo, ...]
    state: StateRule | None = None  # keyed state (busd_protocol.schemas.state)


class _Version:
    __slots__ = ("check", "document", "fast", "number", "retired", "status")

    def __init__(
        self, number: int, status: str, document: Any, check: Checker, fast: FastCheck | None = None
    ) -> None:
        self.number = number
        self.status = status
        self.retired = status == "retired"
        self.document = document
        self.check = check
        self.fast = fast if fast is not None else _fast_via(check)


class _Schema:
    __slots__ = (
        "info",
        "name",
        "not_allowed",
        "prefixes",
        "retired_hint",
        "unknown_hint",
        "versions",
    )

    def __init__(self, source: SchemaSource, versions: dict[int, _Version]) -> None:
        self.name = source.name
        self.prefixes = source.topics
        self.versions = versions
        self.info = SchemaInfo(
            source.name,
            source.description,
            source.topics,
            tuple(VersionInfo(v.number, v.status) for v in versions.values()),
            source.state,
        )
        usable = [n for n, v in versions.items() if not v.retired]
        self.retired_hint = (
            f"; publish v{max(usable)}" if usable else "; no version of it is accepted"
        )
        self.unknown_hint = f" (loaded: {', '.join(map(str, versions)) or 'none'})"
        self.not_allowed = "; allowed prefixes: " + ", ".join(map(show, source.topics))


class SchemaSet:
    """Schemas by name and version, each compiled once. Never changes after construction:
    a reload builds a new set and the owner swaps it in between messages."""

    __slots__ = ("_routes", "_schemas")

    def __init__(self, schemas: Iterable[_Schema] = ()) -> None:
        self._schemas: dict[str, _Schema] = {s.name: s for s in schemas}
        self._routes: dict[tuple[str, int], Route] = {
            (s.name, v.number): (s.prefixes, v.fast, v.status == "deprecated")
            for s in self._schemas.values()
            for v in s.versions.values()
            if not v.retired
        }

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Self:
        """Read and compile ``directory``; raises ``SchemaLoadError`` (file, reason) on the
        first problem: bad JSON, invalid schema, unsupported keyword, missing metadata."""
        return cls.from_sources(read_directory(directory))

    @classmethod
    def from_sources(cls, sources: list[SchemaSource]) -> Self:
        problems = metadata_problems(sources)
        if problems:
            raise SchemaLoadError(*problems[0])
        schemas = []
        for source in sources:
            versions: dict[int, _Version] = {}
            for number, version in source.versions.items():
                check, fast = _compile_both(source.name, number, version.path, version.document)
                versions[number] = _Version(
                    number, source.statuses[number], version.document, check, fast
                )
            schemas.append(_Schema(source, versions))
        return cls(schemas)

    def check(self, topic: str, schema: str, version: int, data: Any) -> Verdict | None:
        """``None`` if a message may pass, else (code, reason). Checks run in this order:
        schema known, version known, version not retired, topic allowed, payload valid."""
        try:
            route = self._routes.get((schema, version))
            if route is not None and topic.startswith(route[0]) and route[1](data):
                return None
        except Exception:  # noqa: S110 - odd input: ``explain`` gives the verdict
            pass
        return self.explain(topic, schema, version, data)

    def explain(self, topic: str, schema: str, version: int, data: Any) -> Verdict | None:
        """``check`` without the fast path: the closure checker judges, and words the reason.
        Callers that already had ``routes()`` say False use this."""
        entry = self._schemas.get(schema)
        if entry is None:
            return (UNKNOWN_SCHEMA, f"no schema named {show(schema)} is loaded")
        compiled = entry.versions.get(version)
        if compiled is None:
            return (
                UNKNOWN_VERSION,
                f"{schema} has no version {show(version)}" + entry.unknown_hint,
            )
        if compiled.retired:
            return (RETIRED_VERSION, f"{schema} v{version} is retired" + entry.retired_hint)
        if not topic.startswith(entry.prefixes):
            return (
                SCHEMA_NOT_ALLOWED,
                f"schema {schema} may not be carried on topic {show(topic)}" + entry.not_allowed,
            )
        failure = compiled.check(data)
        if failure is None:
            return None
        return (INVALID, f"data{failure[0]}: {failure[1]}")

    def routes(self) -> dict[tuple[str, int], Route]:
        """(schema, version) -> ``Route`` for every version not retired. A route accepts a
        message when its topic starts with a prefix and ``fast(data)`` is True; anything else
        goes to ``explain``, which gives the same verdict ``check`` would."""
        return dict(self._routes)

    def state_rules(self) -> dict[str, StateRule]:
        """Schema name -> its state declaration, for the schemas that declare one."""
        return {name: s.info.state for name, s in self._schemas.items() if s.info.state is not None}

    def status(self, schema: str, version: int) -> str | None:
        """``active``, ``deprecated``, ``retired``, or ``None`` if not loaded."""
        entry = self._schemas.get(schema)
        compiled = entry.versions.get(version) if entry is not None else None
        return compiled.status if compiled is not None else None

    def document(self, schema: str, version: int) -> Any:
        """The JSON Schema document as loaded; ``KeyError`` if not loaded."""
        return self._schemas[schema].versions[version].document

    def describe(self) -> tuple[SchemaInfo, ...]:
        """Names, description, allowed topic prefixes and each version's status, by name."""
        return tuple(self._schemas[name].info for name in sorted(self._schemas))

    def __len__(self) -> int:
        return len(self._schemas)

    def __contains__(self, name: object) -> bool:
        return name in self._schemas


def compile_version(name: str, version: int, path: str, document: Any) -> Checker:
    """The checker of one version file; ``SchemaLoadError`` if it cannot be compiled."""
    return _compiler(name, version, path, document)[1]


def _compiler(name: str, version: int, path: str, document: Any) -> tuple[Compiler, Checker]:
    if not isinstance(document, dict) or document.get("type") != "object":
        raise SchemaLoadError(
            path, 'a message schema must be an object with "type": "object" (data is always a map)'
        )
    try:
        compiler = Compiler(document, f"{name} v{version}")
        return compiler, compiler.checker(compiler.root())
    except SchemaError as exc:
        raise SchemaLoadError(path, str(exc)) from exc


def _compile_both(name: str, version: int, path: str, document: Any) -> tuple[Checker, FastCheck]:
    """The closure checker and the fast check of one version, from one compilation: they
    share their string memos, so an invalid message's second pass (the closure checker
    wording the reason) skips what the fast check already found valid."""
    compiler, check = _compiler(name, version, path, document)
    try:
        return check, compile_fast(document, f"{name} v{version}", compiler)
    except Exception:
        return check, _fast_via(check)


def fast_version(name: str, version: int, document: Any, check: Checker) -> FastCheck:
    """The generated fast check of a compiled version; the closure checker behind a bool if
    generation fails (a generator bug must cost speed, never a load or a verdict)."""
    try:
        return compile_fast(document, f"{name} v{version}")
    except Exception:
        return _fast_via(check)


def _fast_via(check: Checker) -> FastCheck:
    def fast(data: Any) -> bool:
        return check(data) is None

    return fast
