"""Offline schema checks: `busd schemas check DIR` and the gate of every reload.

Each version vN+1 must be backward compatible with vN (docs/schemas.md has the rules and
why): consumers of vN keep reading vN+1 messages, ignoring fields they do not know, and
consumers of vN+1 keep reading the vN messages still in flight. Every rule compares two
schema documents node by node and reports the path of the field it is about, e.g.
``release v2: data.env: type changed from map to string``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from busd_protocol.schemas import (
    ASSERTIONS,
    JSON_TYPES,
    SchemaLoadError,
    SchemaSet,
    SchemaSource,
    compile_version,
    json_equal,
    key_segment,
    metadata_problems,
    read_directory,
    show,
)

# Value kinds a schema's "type" admits; "number" is int and float.
_KINDS = {
    "string": {"string"},
    "integer": {"int"},
    "number": {"int", "float"},
    "boolean": {"bool"},
    "array": {"array"},
    "object": {"map"},
    "null": {"nil"},
}
_ALL_KINDS = frozenset().union(*_KINDS.values())
_KIND_ORDER = ("string", "int", "float", "bool", "array", "map", "nil")
assert set(_KINDS) == set(JSON_TYPES)

# (keyword, kind it applies to, True if a larger value is stricter).
_BOUNDS = (
    ("minLength", "string", True),
    ("maxLength", "string", False),
    ("minimum", "number", True),
    ("maximum", "number", False),
    ("exclusiveMinimum", "number", True),
    ("exclusiveMaximum", "number", False),
    ("minItems", "array", True),
    ("maxItems", "array", False),
    ("minProperties", "map", True),
    ("maxProperties", "map", False),
)


class IncompatibleSchemas(SchemaLoadError):
    """A directory that loads but breaks the compatibility rules; ``violations`` lists all."""

    def __init__(self, directory: str, violations: list[str]) -> None:
        self.violations = violations
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(directory, violations[0] + more)


def compatibility_violations(old: object, new: object, label: str) -> list[str]:
    """Why ``new`` (a version document) is not backward compatible with ``old``; ``label``
    (e.g. "release v2") prefixes each line."""
    found: list[tuple[str, str]] = []
    _compare(old, new, "data", found)
    return [f"{label}: {path}: {message}" for path, message in found]


def _kinds(node: dict[str, Any]) -> frozenset[str]:
    names = node.get("type")
    if names is None:
        return _ALL_KINDS
    if isinstance(names, str):
        names = [names]
    return frozenset().union(*(_KINDS[n] for n in names))


def _show_kinds(kinds: frozenset[str]) -> str:
    if kinds == _ALL_KINDS:
        return "any"
    shown = [k for k in _KIND_ORDER if k in kinds]
    if "float" in shown:
        shown.remove("int")  # a "number" admits both; it reads as float in reasons
    return " or ".join(shown)


def _values(node: dict[str, Any]) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    values = node.get("enum")
    return list(values) if isinstance(values, list) else None


def _compare(old: object, new: object, path: str, found: list[tuple[str, str]]) -> None:
    if old is False:
        return  # old accepted nothing: whatever new accepts is an extension
    if new is False:
        found.append((path, "no value is accepted any more"))
        return
    old_node: dict[str, Any] = old if isinstance(old, dict) else {}
    new_node: dict[str, Any] = new if isinstance(new, dict) else {}
    if ASSERTIONS.isdisjoint(old_node) and ASSERTIONS.isdisjoint(new_node):
        return  # both accept anything
    old_kinds, new_kinds = _kinds(old_node), _kinds(new_node)
    if old_kinds != new_kinds:
        verb = "narrowed" if new_kinds < old_kinds else "changed"
        found.append(
            (path, f"type {verb} from {_show_kinds(old_kinds)} to {_show_kinds(new_kinds)}")
        )
    shared = old_kinds & new_kinds
    old_values, new_values = _values(old_node), _values(new_node)
    if new_values is not None:
        if old_values is None:
            found.append(
                (path, "values restricted to [" + ", ".join(show(v) for v in new_values) + "]")
            )
        else:
            removed = [v for v in old_values if not any(json_equal(v, w) for w in new_values)]
            if removed:
                found.append((path, "enum values removed: " + ", ".join(show(v) for v in removed)))
    for keyword, kind, larger_is_stricter in _BOUNDS:
        if (kind == "number" and not shared & {"int", "float"}) or (
            kind != "number" and kind not in shared
        ):
            continue
        before, after = old_node.get(keyword), new_node.get(keyword)
        if after is None or before == after:
            continue
        if before is None:
            found.append((path, f"{keyword} {show(after)} added"))
        elif (after > before) == larger_is_stricter:
            verb = "raised" if after > before else "lowered"
            found.append((path, f"{keyword} {verb} from {show(before)} to {show(after)}"))
    if "string" in shared:
        for keyword in ("pattern", "format"):
            before, after = old_node.get(keyword), new_node.get(keyword)
            if after is not None and before != after:
                found.append(
                    (
                        path,
                        f"{keyword} {show(after)} added"
                        if before is None
                        else f"{keyword} changed from {show(before)} to {show(after)}",
                    )
                )
    if "array" in shared:
        _compare(old_node.get("items", True), new_node.get("items", True), path + "[]", found)
    if "map" in shared:
        _compare_maps(old_node, new_node, path, found)


def _compare_maps(
    old: dict[str, Any], new: dict[str, Any], path: str, found: list[tuple[str, str]]
) -> None:
    old_fields: dict[str, Any] = old.get("properties", {})
    new_fields: dict[str, Any] = new.get("properties", {})
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    old_rest = old.get("additionalProperties", True)
    new_rest = new.get("additionalProperties", True)
    for name in sorted(old_required - new_required):
        removed = name not in new_fields
        found.append(
            (
                path + key_segment(name),
                "required field removed" if removed else "field is no longer required",
            )
        )
    for name in sorted(new_required - old_required):
        found.append(
            (
                path + key_segment(name),
                "field became required"
                if name in old_fields
                else "new field is required (new fields must be optional)",
            )
        )
    for name, schema in new_fields.items():
        # A field new to the schema was, before, one of the map's extra fields.
        _compare(old_fields.get(name, old_rest), schema, path + key_segment(name), found)
    for name, schema in old_fields.items():
        if name not in new_fields and name not in old_required:
            if new_rest is False:
                found.append((path + key_segment(name), "field removed from a closed map"))
            elif new_rest is True or ASSERTIONS.isdisjoint(new_rest):
                found.append(
                    (
                        path + key_segment(name),
                        "optional field removed from an open map (it could now hold any value)",
                    )
                )
            else:
                _compare(schema, new_rest, path + key_segment(name), found)
    if new_rest is False and old_rest is not False:
        found.append((path, "map closed: additionalProperties is now false"))
    else:
        _compare(old_rest, new_rest, path + ".*", found)
    _compare(
        old.get("propertyNames", True), new.get("propertyNames", True), path + " (keys)", found
    )


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
                    previous.document, version.document, f"{source.name} v{number}"
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
