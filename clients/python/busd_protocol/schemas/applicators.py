"""The keywords that judge the same value through other schemas: ``$ref``, ``allOf``,
``anyOf``, ``oneOf``, ``not``, ``if``/``then``/``else``, and the unevaluated keywords.

Reasons stay ``<path>: <rule>``: ``allOf``, ``$ref`` and ``then``/``else`` pass the failure
of the subschema through (the latter two saying which branch applied); ``anyOf`` and
``oneOf`` list, concisely, why each branch failed.

``unevaluatedProperties`` / ``unevaluatedItems`` need to know which fields (items) the rest
of their schema object evaluated, through every applicator that succeeded: ``Annotations``
computes that on demand, only for the nodes that carry those keywords.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from busd_protocol.schemas.values import Checker, Failure, SchemaError, key_segment

if TYPE_CHECKING:
    from busd_protocol.schemas.compiler import Compiler

_BRANCH_CHARS = 80  # each branch's reason in an anyOf / oneOf refusal is cut to this
_BRANCHES_SHOWN = 4
# A set of evaluated field names or item indices; None: all of them.
Evaluated = Callable[[Any], frozenset[Any] | None]


def _branches(compiler: Compiler, schema: dict[str, Any], key: str, at: str) -> list[Checker]:
    listed = schema[key]
    if not isinstance(listed, list) or not listed:
        raise SchemaError(f"{at}/{key}", "expected a non-empty list of schemas")
    return [compiler.node(s, f"{at}/{key}/{i}") for i, s in enumerate(listed)]


def _why(failures: list[tuple[int, Failure]]) -> str:
    parts = []
    for index, (path, rule) in failures[:_BRANCHES_SHOWN]:
        text = f"{path}: {rule}" if path else rule
        if len(text) > _BRANCH_CHARS:
            text = text[: _BRANCH_CHARS - 3] + "..."
        parts.append(f"{index}: {text}")
    if len(failures) > _BRANCHES_SHOWN:
        parts.append(f"and {len(failures) - _BRANCHES_SHOWN} more")
    return "; ".join(parts)


def in_place(compiler: Compiler, schema: dict[str, Any], at: str) -> list[Checker]:
    """The checkers of ``schema``'s in-place applicators, in the order they run."""
    checks: list[Checker] = []
    if "$ref" in schema:
        checks.append(compiler.reference(schema, at))
    if "allOf" in schema:
        checks.extend(_branches(compiler, schema, "allOf", at))
    if "anyOf" in schema:
        checks.append(_any_of(_branches(compiler, schema, "anyOf", at)))
    if "oneOf" in schema:
        checks.append(_one_of(_branches(compiler, schema, "oneOf", at)))
    if "not" in schema:
        checks.append(_not(compiler.node(schema["not"], at + "/not")))
    if "if" in schema:
        condition = compiler.node(schema["if"], at + "/if")
        yes = compiler.node(schema["then"], at + "/then") if "then" in schema else None
        no = compiler.node(schema["else"], at + "/else") if "else" in schema else None
        if yes is not None or no is not None:
            checks.append(_if(condition, yes, no))
    for key in ("then", "else"):
        if key in schema and "if" not in schema:
            compiler.node(schema[key], f"{at}/{key}")  # validated; without "if" it is inert
    return checks


def _any_of(branches: list[Checker]) -> Checker:
    def check_any_of(value: Any) -> Failure | None:
        failures = []
        for index, branch in enumerate(branches):
            failure = branch(value)
            if failure is None:
                return None
            failures.append((index, failure))
        return ("", f"no anyOf branch matches ({_why(failures)})")

    return check_any_of


def _one_of(branches: list[Checker]) -> Checker:
    def check_one_of(value: Any) -> Failure | None:
        failures = []
        matched = []
        for index, branch in enumerate(branches):
            failure = branch(value)
            if failure is None:
                matched.append(index)
                if len(matched) == 2:
                    return (
                        "",
                        f"matches oneOf branches {matched[0]} and {matched[1]}, "
                        "expected exactly one",
                    )
            else:
                failures.append((index, failure))
        if matched:
            return None
        return ("", f"no oneOf branch matches ({_why(failures)})")

    return check_one_of


def _not(inner: Checker) -> Checker:
    def check_not(value: Any) -> Failure | None:
        if inner(value) is None:
            return ("", 'matches the schema under "not"')
        return None

    return check_not


def _if(condition: Checker, yes: Checker | None, no: Checker | None) -> Checker:
    def check_if(value: Any) -> Failure | None:
        if condition(value) is None:
            failure = yes(value) if yes is not None else None
            note = " (then: the if schema matched)"
        else:
            failure = no(value) if no is not None else None
            note = " (else: the if schema did not match)"
        return None if failure is None else (failure[0], failure[1] + note)

    return check_if


def tagged_union(branches: list[Any], follow: Callable[[object], object]) -> bool:
    """Whether no value can match two of ``branches`` (a ``oneOf`` that is a tagged union):
    each, once ``follow`` has resolved pure references, is of type object and requires one
    same field holding a string const, and the consts differ."""
    tags: dict[str, list[str]] = {}
    for listed in branches:
        branch = follow(listed)
        if not isinstance(branch, dict) or branch.get("type") != "object":
            return False
        properties = branch.get("properties", {})
        for name in branch.get("required", ()):
            field = properties.get(name)
            const = field.get("const") if isinstance(field, dict) else None
            if type(const) is str:
                tags.setdefault(name, []).append(const)
    return any(
        len(found) == len(branches) and len(set(found)) == len(found) for found in tags.values()
    )


def unevaluated(compiler: Compiler, schema: dict[str, Any], at: str, check: Checker) -> Checker:
    """``check`` followed by the node's unevaluated keywords, if it has any."""
    if "unevaluatedProperties" not in schema and "unevaluatedItems" not in schema:
        return check
    notes = compiler.annotations
    fields_rule = items_rule = None
    if "unevaluatedProperties" in schema:
        fields_rule = compiler.node(schema["unevaluatedProperties"], at + "/unevaluatedProperties")
        fields_seen = notes.properties(schema, own=False)
    if "unevaluatedItems" in schema:
        items_rule = compiler.node(schema["unevaluatedItems"], at + "/unevaluatedItems")
        items_seen = notes.items(schema, own=False)
    closed_fields = schema.get("unevaluatedProperties") is False
    label = compiler.label

    def check_unevaluated(value: Any) -> Failure | None:
        failure = check(value)
        if failure is not None:
            return failure
        if fields_rule is not None and type(value) is dict:
            seen = fields_seen(value)
            if seen is not None:
                for key, element in value.items():
                    if key in seen:
                        continue
                    if closed_fields:
                        return (key_segment(key), f"field not allowed by {label}")
                    failure = fields_rule(element)
                    if failure is not None:
                        return (key_segment(key) + failure[0], failure[1])
        if items_rule is not None and (type(value) is list or type(value) is tuple):
            seen = items_seen(value)
            if seen is not None:
                for index, element in enumerate(value):
                    if index not in seen:
                        failure = items_rule(element)
                        if failure is not None:
                            if failure == ("", "no value is allowed here"):
                                return (f"[{index}]", f"item not allowed by {label}")
                            return (f"[{index}]" + failure[0], failure[1])
        return None

    return check_unevaluated


def _union(parts: list[frozenset[Any] | None]) -> frozenset[Any] | None:
    result: frozenset[Any] = frozenset()
    for part in parts:
        if part is None:
            return None
        result |= part
    return result


class Annotations:
    """Which fields / items a schema node evaluated on a value it accepted (2020-12 §11)."""

    def __init__(self, compiler: Compiler) -> None:
        self.compiler = compiler
        self._cache: dict[tuple[str, int, bool], Evaluated] = {}

    def _memo(self, kind: str, schema: object, own: bool) -> tuple[tuple[str, int, bool], bool]:
        key = (kind, id(schema), own)
        return key, key in self._cache

    def properties(self, schema: object, own: bool = True) -> Evaluated:
        return self._build("properties", schema, own)

    def items(self, schema: object, own: bool = True) -> Evaluated:
        return self._build("items", schema, own)

    def _build(self, kind: str, schema: object, own: bool) -> Evaluated:
        key, known = self._memo(kind, schema, own)
        if known:
            return self._cache[key]
        cache = self._cache

        def late(value: Any) -> frozenset[Any] | None:
            # Bound late: a schema referring to itself finds its own function at run time.
            return cache[key](value)

        cache[key] = late
        built = self._evaluated(kind, schema, own) if isinstance(schema, dict) else _nothing
        cache[key] = built
        return built

    def _evaluated(self, kind: str, schema: dict[str, Any], own: bool) -> Evaluated:
        node = self.compiler.node
        at = self.compiler.pointer(schema)
        sub = self.properties if kind == "properties" else self.items
        everything = "unevaluatedProperties" if kind == "properties" else "unevaluatedItems"
        if own and everything in schema:
            return _everything
        static = _static_properties(schema) if kind == "properties" else _static_items(self, schema)
        parts: list[Callable[[Any], frozenset[Any] | None]] = [static]
        if "$ref" in schema:
            target = self.compiler.index.target(schema, at)
            parts.append(sub(target))
        for branch in schema.get("allOf", []):
            parts.append(sub(branch))
        for word in ("anyOf", "oneOf"):
            for branch in schema.get(word, []):
                parts.append(_if_valid(node(branch, at), sub(branch)))
        if "if" in schema:
            condition = node(schema["if"], at)
            then_seen = sub(schema["then"]) if "then" in schema else _nothing
            else_seen = sub(schema["else"]) if "else" in schema else _nothing
            if_seen = sub(schema["if"])

            def branch_seen(value: Any) -> frozenset[Any] | None:
                if condition(value) is None:
                    return _union([if_seen(value), then_seen(value)])
                return else_seen(value)

            parts.append(branch_seen)
        if kind == "properties":
            for name, dependent in schema.get("dependentSchemas", {}).items():
                parts.append(_if_present(name, sub(dependent)))

        def seen(value: Any) -> frozenset[Any] | None:
            return _union([part(value) for part in parts])

        return seen


def _nothing(value: Any) -> frozenset[Any] | None:
    return frozenset()


def _everything(value: Any) -> frozenset[Any] | None:
    return None


def _if_valid(check: Checker, seen: Evaluated) -> Evaluated:
    return lambda value: seen(value) if check(value) is None else frozenset()


def _if_present(name: str, seen: Evaluated) -> Evaluated:
    return lambda value: seen(value) if type(value) is dict and name in value else frozenset()


def _static_properties(schema: dict[str, Any]) -> Evaluated:
    if "additionalProperties" in schema:
        return _everything
    names = frozenset(schema.get("properties", {}))
    searches = [re.compile(p).search for p in schema.get("patternProperties", {})]

    def seen(value: Any) -> frozenset[Any] | None:
        if type(value) is not dict:
            return frozenset()
        found = names & value.keys()
        if searches:
            found |= {k for k in value if type(k) is str and any(s(k) for s in searches)}
        return found

    return seen


def _static_items(notes: Annotations, schema: dict[str, Any]) -> Evaluated:
    if "items" in schema:
        return _everything
    n_prefix = len(schema.get("prefixItems", []))
    contains = notes.compiler.node(schema["contains"], "") if "contains" in schema else None

    def seen(value: Any) -> frozenset[Any] | None:
        if type(value) is not list and type(value) is not tuple:
            return frozenset()
        found = set(range(min(n_prefix, len(value))))
        if contains is not None:
            found.update(i for i, element in enumerate(value) if contains(element) is None)
        return frozenset(found)

    return seen
