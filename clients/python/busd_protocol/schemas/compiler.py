"""Compile a JSON Schema (draft 2020-12) into a checker of decoded msgpack values.

A schema is compiled once, at load, into nested closures; checking a message then costs a few
dict lookups and type tests per field. A checker returns ``None`` when the value is valid, or
a ``Failure``: the path below the checked value (".env.JAVA_OPTS") and what is wrong
("expected string, got int"). Paths are built only on failure, bottom-up, so valid messages
pay nothing for them.

Each node's type test is fused with the keywords of that type (types.py); the keywords that
apply whatever the type (const, enum, ``$ref`` and the applicators) run after it
(applicators.py). Keywords outside ``ASSERTIONS`` and ``ANNOTATIONS`` are refused with
``SchemaError`` naming their JSON pointer: a schema must never look stricter than what busd
enforces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from busd_protocol.schemas import applicators, containers, types
from busd_protocol.schemas.refs import IN_PLACE, ONE_SCHEMA, SCHEMA_LIST, SCHEMA_MAP, Index, escape
from busd_protocol.schemas.values import (
    DIALECT,
    JSON_TYPES,
    TYPE_NAMES,
    Checker,
    Failure,
    SchemaError,
    accept,
    nesting_depth,
    reject,
)

ASSERTIONS = frozenset(
    {
        "type",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "items",
        "prefixItems",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
        "minItems",
        "maxItems",
        "properties",
        "patternProperties",
        "required",
        "dependentRequired",
        "dependentSchemas",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "$ref",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$defs",
        "$comment",
        "title",
        "description",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
# Data nested deeper than this is refused by schemas that refer to themselves (a tree, a
# linked list): their checkers recurse once per level, and Python's stack is finite.
MAX_NESTING = 100


def compile_schema(schema: object, label: str) -> Checker:
    """The checker for ``schema``; ``label`` (e.g. "release v1") names it in reasons."""
    compiler = Compiler(schema, label)
    return compiler.checker(compiler.root())


class Compiler:
    """Validates a schema document while turning each of its nodes into one closure.

    Nodes are compiled once each (``$ref`` targets and the subschemas the unevaluated
    keywords look at again are shared); a reference is bound through a cell filled when its
    target is compiled, so a schema may refer to itself.
    """

    def __init__(self, document: object, label: str) -> None:
        self.label = label
        self.document = document
        self.index = Index(document)
        self.checkers: dict[int, Checker] = {}
        self.cells: dict[int, list[Checker]] = {}
        self.pending: list[object] = []
        self.recursive = False  # some reference cycle exists (through a descent)
        self.annotations = applicators.Annotations(self)
        self.memos: dict[int, set[str]] = {}

    def root(self) -> Checker:
        check = self.node(self.document, "")
        while self.pending:
            target = self.pending.pop()
            self.cells[id(target)][0] = self.node(target, self.pointer(target))
        self._refuse_endless_cycles()
        return check

    def checker(self, check: Checker) -> Checker:
        """The document's checker: ``check`` (the root's), bounded in nesting if recursive."""
        if not self.recursive:
            return check
        limit = MAX_NESTING

        def check_nesting(value: Any) -> Failure | None:
            if nesting_depth(value, limit) > limit:
                return ("", f"nested deeper than {limit} levels")
            return check(value)

        return check_nesting

    def memo(self, schema: dict[str, Any]) -> set[str]:
        """The strings known to pass ``schema``'s string rules, shared by the closure and
        the generated check of the node (both add only strings that passed them all)."""
        return self.memos.setdefault(id(schema), set())

    def pointer(self, node: object) -> str:
        return self.index.pointer.get(id(node), "")

    def node(self, schema: object, at: str) -> Checker:
        if schema is True:
            return accept
        if schema is False:
            return reject
        if not isinstance(schema, dict):
            raise SchemaError(at, "a schema must be an object or a boolean")
        known = self.checkers.get(id(schema))
        if known is not None:
            return known
        for key in schema:
            if key not in ASSERTIONS and key not in ANNOTATIONS:
                raise SchemaError(at, f"unsupported keyword {key!r}")
        dialect = schema.get("$schema", DIALECT)
        if dialect != DIALECT:
            raise SchemaError(at + "/$schema", f"expected {DIALECT!r}, got {dialect!r}")
        for key in ("$id", "$anchor", "$comment"):
            if key in schema and not isinstance(schema[key], str):
                raise SchemaError(f"{at}/{key}", "expected a string")
        definitions = schema.get("$defs", {})
        if not isinstance(definitions, dict):
            raise SchemaError(at + "/$defs", "expected an object")
        for name, sub in definitions.items():
            self.node(sub, f"{at}/$defs/{escape(name)}")
        classes, expected = _types(schema, at)
        extra = (*types.values(schema, at), *applicators.in_place(self, schema, at))
        builders: dict[type, Callable[[str | None], Checker]] = {
            str: types.string(schema, at, extra, self.memo(schema)),
            int: types.number(schema, at, extra),
            list: containers.array(self, schema, at, extra),
            dict: containers.mapping(self, schema, at, extra),
        }
        check: Checker
        if classes is not None and len(kinds := {_KIND[c] for c in classes}) == 1:
            kind = kinds.pop()
            # One type (int and float count as one, number): the type test is fused in.
            check = (
                builders[kind](expected) if kind in builders else _typed(classes, expected, extra)
            )
        else:
            table: dict[type, Checker] = {}
            for cls in classes if classes is not None else TYPE_NAMES:
                kind = _KIND[cls]
                table[cls] = builders[kind](None) if kind in builders else _run_all(extra)
            check = _dispatch(table, classes is not None, expected, _run_all(extra))
        check = applicators.unevaluated(self, schema, at, check)
        self.checkers[id(schema)] = check
        return check

    def reference(self, schema: dict[str, Any], at: str) -> Checker:
        """The checker of ``schema``'s ``$ref`` target, bound late (targets may recurse)."""
        target = self.index.target(schema, at)
        if isinstance(target, bool):
            return self.node(target, at)
        cell = self.cells.get(id(target))
        if cell is None:
            cell = self.cells[id(target)] = [_unresolved]
            self.pending.append(target)

        def check_ref(value: Any) -> Failure | None:
            return cell[0](value)

        return check_ref

    def _refuse_endless_cycles(self) -> None:
        """A reference cycle that never descends into an item or a field would recurse on
        any value until the stack runs out: refused. A cycle that descends is bounded by the
        data's depth, which ``compile_schema`` limits to ``MAX_NESTING`` for such schemas."""
        edges: dict[int, list[tuple[dict[str, Any], bool]]] = {}
        stack: list[object] = [self.document]
        while stack:
            node = stack.pop()
            if not isinstance(node, dict) or id(node) in edges:
                continue
            out: list[tuple[object, bool]] = []
            if "$ref" in node:
                out.append((self.index.target(node, self.pointer(node)), True))
            for key, value in node.items():
                if key in SCHEMA_LIST and isinstance(value, list):
                    subs = list(value)
                elif key in SCHEMA_MAP and isinstance(value, dict):
                    subs = list(value.values())
                else:
                    subs = [value] if key in ONE_SCHEMA else []
                stack.extend(subs)
                if key != "$defs":
                    out.extend((sub, key in IN_PLACE) for sub in subs)
            edges[id(node)] = [(t, p) for t, p in out if isinstance(t, dict)]
            stack.extend(t for t, _ in out)
        if _has_cycle(edges, in_place_only=True):
            raise SchemaError("", "$ref cycle that never descends into the value (endless)")
        self.recursive = _has_cycle(edges, in_place_only=False)


def _has_cycle(edges: dict[int, list[tuple[dict[str, Any], bool]]], in_place_only: bool) -> bool:
    state: dict[int, int] = {}  # 1: on the current path, 2: done

    def visit(key: int) -> bool:
        state[key] = 1
        for target, in_place in edges.get(key, []):
            if in_place_only and not in_place:
                continue
            mark = state.get(id(target))
            if mark == 1 or (mark is None and visit(id(target))):
                return True
        state[key] = 2
        return False

    return any(key not in state and visit(key) for key in list(edges))


# Which fused checker handles a Python class.
_KIND: dict[type, type] = {
    str: str,
    int: int,
    float: int,
    bool: bool,
    bytes: bytes,
    list: list,
    tuple: list,
    dict: dict,
    type(None): type(None),
}


def _unresolved(value: Any) -> Failure | None:
    raise RuntimeError("a $ref checker ran before its target was compiled")


def _types(schema: dict[str, Any], at: str) -> tuple[frozenset[type] | None, str]:
    if "type" not in schema:
        return None, ""
    names = schema["type"]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise SchemaError(at + "/type", "expected a type name or a list of distinct ones")
    classes: set[type] = set()
    shown: list[str] = []
    for name in names:
        if name not in JSON_TYPES:
            raise SchemaError(at + "/type", f"unknown type {name!r}")
        classes.update(JSON_TYPES[name][0])
        shown.append(JSON_TYPES[name][1])
    if "number" in names and "integer" in names:
        shown.remove("int")  # "int or float" says no more than "float"
    return frozenset(classes), " or ".join(shown)


def _run_all(checks: tuple[Checker, ...]) -> Checker:
    return types.then(checks) or accept


def _typed(classes: frozenset[type], expected: str, extra: tuple[Checker, ...]) -> Checker:
    """A boolean or nil node: the type test, then the keywords of any type."""
    after = _run_all(extra)

    def check_typed(value: Any) -> Failure | None:
        if type(value) not in classes:
            return types.type_failure(expected, value)
        return after(value)

    return check_typed


def _dispatch(table: dict[type, Checker], typed: bool, expected: str, fallback: Checker) -> Checker:
    """A node accepting several types (or any): pick the fused checker by the value's class."""

    def check_dispatch(value: Any) -> Failure | None:
        check = table.get(type(value))
        if check is None:
            return types.type_failure(expected, value) if typed else fallback(value)
        return check(value)

    return check_dispatch
