"""Offline schema checks: `busd schemas check DIR` and the gate of every reload.

Each version vN+1 must be backward compatible with vN (docs/schemas.md has the rules and
why): consumers of vN keep reading vN+1 messages, ignoring fields they do not know, and
consumers of vN+1 keep reading the vN messages still in flight. The rules (rules.py)
compare two schema documents node by node and report the path of the field each is about,
one per line, e.g. ``release v2: data.env: type changed from map to string``; a change the
rules cannot decide is reported too, and passes only where meta.json's
``assume_compatible`` lists its version and path.
"""

from __future__ import annotations

import argparse
import os
import sys

from busd.schemacheck.rules import Comparison
from busd_protocol.schemas import (
    SchemaLoadError,
    SchemaSet,
    SchemaSource,
    compile_version,
    metadata_problems,
    read_directory,
    show,
)


class IncompatibleSchemas(SchemaLoadError):
    """A directory that loads but breaks the compatibility rules; ``violations`` lists all."""

    def __init__(self, directory: str, violations: list[str]) -> None:
        self.violations = violations
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(directory, violations[0] + more)


def compatibility_violations(
    old: object, new: object, label: str, assumed: tuple[str, ...] = ()
) -> list[str]:
    """Why ``new`` (a version document) is not backward compatible with ``old``; ``label``
    (e.g. "release v2") prefixes each line. Undecidable changes at a path in ``assumed``
    (meta.json's ``assume_compatible`` for this version) are accepted."""
    found = Comparison(old, new).found
    lines = [
        f"{label}: {v.path}: {v.message}"
        + ("" if v.decidable else f'; if it is, list "{v.path}" in meta.json assume_compatible')
        for v in found
        if v.decidable or v.path not in assumed
    ]
    undecided = {v.path for v in found if not v.decidable}
    lines += [
        f"{label}: {path}: listed in assume_compatible, but nothing there is undecidable"
        for path in assumed
        if path not in undecided
    ]
    return lines


def check_sources(sources: list[SchemaSource]) -> list[str]:
    """Every violation in a directory read by ``read_directory``: metadata problems, then
    compatibility of each version with the one before. ``SchemaLoadError`` if a version
    file is not a schema busd can compile."""
    violations = [f"{file}: {reason}" for file, reason in metadata_problems(sources)]
    for source in sources:
        previous = None
        for number, version in source.versions.items():
            compile_version(source.name, number, version.path, version.document)
            if previous is not None:
                violations += compatibility_violations(
                    previous.document,
                    version.document,
                    f"{source.name} v{number}",
                    source.assumed.get(number, ()),
                )
            previous = version
    return violations


def load_checked(directory: str | os.PathLike[str]) -> SchemaSet:
    """What a reload calls: the compiled set, or ``SchemaLoadError`` (``IncompatibleSchemas``
    for rule violations) so the previous set keeps serving. Blocking file I/O: run it in a
    thread, then ``SchemaGate.install`` the result between messages."""
    sources = read_directory(directory)
    violations = check_sources(sources)
    if violations:
        raise IncompatibleSchemas(os.fspath(directory), violations)
    return SchemaSet.from_sources(sources)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busd schemas", description="Offline schema tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="check a schemas directory: metadata, compatibility")
    check.add_argument("directory", metavar="DIR")
    listing = sub.add_parser("list", help="list schemas, versions, status and topics")
    listing.add_argument("directory", metavar="DIR")
    return parser


def main(argv: list[str]) -> int:
    """`busd schemas check DIR`: 0 if clean, 1 with one violation per line on stdout,
    2 on a usage or load error (on stderr). `busd schemas list DIR` prints the set."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        if args.command == "list":
            for info in SchemaSet.load(args.directory).describe():
                versions = ", ".join(f"v{v.version} {v.status}" for v in info.versions)
                print(f"{info.name}: {versions}; topics {', '.join(map(show, info.topics))}")
            return 0
        sources = read_directory(args.directory)
        violations = check_sources(sources)
    except SchemaLoadError as exc:
        print(f"busd schemas: {exc}", file=sys.stderr)
        return 2
    for line in violations:
        print(line)
    if violations:
        return 1
    count = sum(len(s.versions) for s in sources)
    print(f"{args.directory}: {len(sources)} schemas, {count} versions, compatible")
    return 0
