"""The two-way compatibility rules of `busd schemas check`, node by node (docs/schemas.md §3).

``Comparison`` walks two versions of a schema from ``data`` and records each violation as
(path, what, decidable). ``$ref`` targets are compared as if written in place (a reference
cycle is compared once per pair of nodes); ``allOf``, ``anyOf``, ``oneOf`` branches pairwise
by position, ``prefixItems`` per index, ``patternProperties`` per pattern, the dependent
keywords per field. Where the rules cannot decide (``not``, a changed ``if``, the
unevaluated keywords, a branch added to a ``oneOf`` that is not a tagged union), the change
is reported as undecidable rather than passed: the operator may accept it for one version
and path with ``assume_compatible`` in meta.json.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, NamedTuple

from busd_protocol.schemas import ASSERTIONS, JSON_TYPES, json_equal, key_segment, show
from busd_protocol.schemas.applicators import tagged_union
from busd_protocol.schemas.refs import Index

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
    ("minContains", "array", True),
    ("maxContains", "array", False),
    ("minProperties", "map", True),
    ("maxProperties", "map", False),
)
# Keywords compared only for equality: any change is undecidable.
_OPAQUE = ("not", "unevaluatedProperties", "unevaluatedItems")
UNDECIDABLE = "cannot decide whether this is compatible"


class Violation(NamedTuple):
    path: str
    message: str
    decidable: bool


class Comparison:
    """One comparison of an old and a new version document."""

    def __init__(self, old: object, new: object) -> None:
        self.found: list[Violation] = []
        self._indexes = (_index(old), _index(new))
        self._active: set[tuple[int, int]] = set()  # pairs under comparison (ref cycles)
        self.node(old, new, "data")

    def report(self, path: str, message: str) -> None:
        self.found.append(Violation(path, message, True))

    def undecidable(self, path: str, why: str) -> None:
        self.found.append(Violation(path, f"{UNDECIDABLE}: {why}", False))

    def _deref(self, node: object, side: int) -> object:
        """``node`` with a pure reference (``$ref`` and annotations only) followed, and one
        with assertions beside ``$ref`` read as an ``allOf`` of the target and the rest; a
        lone ``allOf`` of one branch is that branch."""
        index = self._indexes[side]
        for _ in range(64):  # reference chains are short; cycles are refused at load
            if not isinstance(node, dict):
                return node
            if "$ref" in node and index is not None:
                target = index.target(node, index.pointer.get(id(node), ""))
                rest = {k: v for k, v in node.items() if k != "$ref"}
                if ASSERTIONS.isdisjoint(rest):
                    node = target
                    continue
                node = {**rest, "allOf": [target, *rest.get("allOf", [])]}
            if "allOf" in node:
                merged = self._merge(node, side)
                if merged is not node:
                    node = merged
                    continue
            return node
        return node

    def _merge(self, node: dict[str, Any], side: int) -> dict[str, Any]:
        """``node`` with the ``allOf`` branches that fold into it without changing what it
        accepts written into it (so moving rules into a ``$ref``'d base is no change)."""
        result = {k: v for k, v in node.items() if k != "allOf"}
        kept: list[Any] = []
        for listed in node["allOf"]:
            branch = self._deref(listed, side)
            folded = _fold(result, branch) if isinstance(branch, dict) else None
            if folded is None:
                kept.append(listed)
            else:
                result = folded
        if len(kept) == len(node["allOf"]):
            return node
        if kept:
            result["allOf"] = kept
        return result

    def node(self, old: object, new: object, path: str) -> None:
        old, new = self._deref(old, 0), self._deref(new, 1)
        pair = (id(old), id(new))
        if pair in self._active or json_equal(old, new):
            return
        self._active.add(pair)
        try:
            self._node(old, new, path)
        finally:
            self._active.discard(pair)

    def _node(self, old: object, new: object, path: str) -> None:
        if old is False:
            return  # old accepted nothing: whatever new accepts is an extension
        if new is False:
            self.report(path, "no value is accepted any more")
            return
        old_node: dict[str, Any] = old if isinstance(old, dict) else {}
        new_node: dict[str, Any] = new if isinstance(new, dict) else {}
        if ASSERTIONS.isdisjoint(old_node) and ASSERTIONS.isdisjoint(new_node):
            return  # both accept anything
        old_kinds, new_kinds = _kinds(old_node), _kinds(new_node)
        if old_kinds != new_kinds:
            verb = "narrowed" if new_kinds < old_kinds else "changed"
            self.report(
                path, f"type {verb} from {_show_kinds(old_kinds)} to {_show_kinds(new_kinds)}"
            )
        shared = old_kinds & new_kinds
        self._values(old_node, new_node, path)
        self._bounds(old_node, new_node, path, shared)
        if "string" in shared:
            for keyword in ("pattern", "format"):
                before, after = old_node.get(keyword), new_node.get(keyword)
                if after is not None and before != after:
                    self.report(
                        path,
                        f"{keyword} {show(after)} added"
                        if before is None
                        else f"{keyword} changed from {show(before)} to {show(after)}",
                    )
        if shared & {"int", "float"}:
            self._multiple_of(old_node.get("multipleOf"), new_node.get("multipleOf"), path)
        if "array" in shared:
            self._arrays(old_node, new_node, path)
        if "map" in shared:
            self._maps(old_node, new_node, path)
        self._applicators(old_node, new_node, path)

    def _values(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_values, new_values = _listed(old), _listed(new)
        if new_values is None:
            return
        if old_values is None:
            self.report(path, "values restricted to [" + ", ".join(map(show, new_values)) + "]")
            return
        removed = [v for v in old_values if not any(json_equal(v, w) for w in new_values)]
        if removed:
            self.report(path, "enum values removed: " + ", ".join(map(show, removed)))

    def _bounds(
        self, old: dict[str, Any], new: dict[str, Any], path: str, shared: frozenset[str]
    ) -> None:
        for keyword, kind, larger_is_stricter in _BOUNDS:
            if (kind == "number" and not shared & {"int", "float"}) or (
                kind != "number" and kind not in shared
            ):
                continue
            before, after = old.get(keyword), new.get(keyword)
            if after is None or before == after:
                continue
            if before is None:
                self.report(path, f"{keyword} {show(after)} added")
            elif (after > before) == larger_is_stricter:
                verb = "raised" if after > before else "lowered"
                self.report(path, f"{keyword} {verb} from {show(before)} to {show(after)}")

    def _multiple_of(self, before: Any, after: Any, path: str) -> None:
        if after is None or before == after:
            return
        if before is None:
            self.report(path, f"multipleOf {show(after)} added")
        elif (Fraction(repr(before)) / Fraction(repr(after))).denominator != 1:
            # Every old multiple is a new one only when the new step divides the old.
            self.report(path, f"multipleOf changed from {show(before)} to {show(after)}")

    def _arrays(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_prefix, new_prefix = old.get("prefixItems", []), new.get("prefixItems", [])
        old_items, new_items = old.get("items", True), new.get("items", True)
        for index in range(max(len(old_prefix), len(new_prefix))):
            before = old_prefix[index] if index < len(old_prefix) else old_items
            after = new_prefix[index] if index < len(new_prefix) else new_items
            self.node(before, after, f"{path}[{index}]")
        self.node(old_items, new_items, path + "[]")
        if "contains" in new and not json_equal(old.get("contains"), new["contains"]):
            if "contains" not in old:
                self.report(path, "contains added")
            else:
                self.node(old["contains"], new["contains"], path + " (contains)")
                if "maxContains" in new:
                    self.undecidable(path, "contains changed under maxContains")
        if new.get("uniqueItems") is True and old.get("uniqueItems") is not True:
            self.report(path, "uniqueItems added")

    def _maps(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_fields: dict[str, Any] = old.get("properties", {})
        new_fields: dict[str, Any] = new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        old_rest = old.get("additionalProperties", True)
        new_rest = new.get("additionalProperties", True)
        for name in sorted(old_required - new_required):
            removed = name not in new_fields
            self.report(
                path + key_segment(name),
                "required field removed" if removed else "field is no longer required",
            )
        for name in sorted(new_required - old_required):
            self.report(
                path + key_segment(name),
                "field became required"
                if name in old_fields
                else "new field is required (new fields must be optional)",
            )
        old_patterns: dict[str, Any] = old.get("patternProperties", {})
        new_patterns: dict[str, Any] = new.get("patternProperties", {})
        for name, schema in new_fields.items():
            # A field new to the schema was, before, one of the map's extra fields.
            before = old_fields.get(name, _governing(name, old_patterns, old_rest))
            self.node(before, schema, path + key_segment(name))
        for name, schema in old_fields.items():
            if name not in new_fields and name not in old_required:
                self._field_removed(schema, _governing(name, new_patterns, new_rest), name, path)
        for pattern in sorted(set(old_patterns) | set(new_patterns)):
            where = f"{path} (keys matching {show(pattern)})"
            self.node(
                old_patterns.get(pattern, old_rest), new_patterns.get(pattern, new_rest), where
            )
        if new_rest is False and old_rest is not False:
            self.report(path, "map closed: additionalProperties is now false")
        else:
            self.node(old_rest, new_rest, path + ".*")
        self.node(old.get("propertyNames", True), new.get("propertyNames", True), path + " (keys)")
        self._dependent(old, new, path)

    def _field_removed(self, schema: Any, rest: Any, name: str, path: str) -> None:
        where = path + key_segment(name)
        if rest is False:
            self.report(where, "field removed from a closed map")
        elif rest is True or (isinstance(rest, dict) and ASSERTIONS.isdisjoint(rest)):
            self.report(
                where, "optional field removed from an open map (it could now hold any value)"
            )
        else:
            self.node(schema, rest, where)

    def _dependent(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_needs: dict[str, list[str]] = old.get("dependentRequired", {})
        new_needs: dict[str, list[str]] = new.get("dependentRequired", {})
        for key in sorted(set(old_needs) | set(new_needs)):
            before, after = set(old_needs.get(key, ())), set(new_needs.get(key, ()))
            for name in sorted(after - before):
                self.report(path + key_segment(name), f"became required with {show(key)}")
            for name in sorted(before - after):
                self.report(path + key_segment(name), f"no longer required with {show(key)}")
        old_schemas: dict[str, Any] = old.get("dependentSchemas", {})
        new_schemas: dict[str, Any] = new.get("dependentSchemas", {})
        for key in sorted(set(old_schemas) | set(new_schemas)):
            where = f"{path} (when {show(key)} is present)"
            self.node(old_schemas.get(key, True), new_schemas.get(key, True), where)

    def _applicators(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        for keyword in _OPAQUE:
            if not json_equal(old.get(keyword), new.get(keyword)):
                self.undecidable(path, f"{keyword} changed")
        if not json_equal(old.get("if"), new.get("if")):
            if "if" in old or "if" in new:
                self.undecidable(path, "the if schema changed")
        else:
            for keyword in ("then", "else"):
                self.node(old.get(keyword, True), new.get(keyword, True), f"{path} ({keyword})")
        old_all, new_all = old.get("allOf", []), new.get("allOf", [])
        for index in range(max(len(old_all), len(new_all))):
            before = old_all[index] if index < len(old_all) else True
            after = new_all[index] if index < len(new_all) else True
            self.node(before, after, f"{path} (allOf {index})")
        for keyword in ("anyOf", "oneOf"):
            self._alternatives(keyword, old.get(keyword), new.get(keyword), path)

    def _alternatives(self, keyword: str, old: Any, new: Any, path: str) -> None:
        if old is None and new is None:
            return
        if old is None or new is None:
            if old is None:
                self.report(path, f"{keyword} added")
            else:
                self.undecidable(path, f"{keyword} removed: check its branches moved in place")
            return
        for index in range(min(len(old), len(new))):
            self.node(old[index], new[index], f"{path} ({keyword} {index})")
        for index in range(len(new), len(old)):
            self.report(path, f"{keyword} branch {index} removed (values matching it are refused)")
        for index in range(len(old), len(new)):
            if keyword == "oneOf" and tagged_union(new, lambda node: self._deref(node, 1)):
                continue  # a new variant of a tagged union: as an enum value added
            if keyword == "oneOf":
                self.undecidable(
                    path, f"oneOf branch {index} added (a value may now match two branches)"
                )
            else:
                self.report(
                    path,
                    f"anyOf branch {index} added (old readers may get values they do not know)",
                )


# Keywords that judge fields (items) by what other keywords of the same object list: they
# cannot move between a node and an allOf branch without changing what is accepted.
_SIBLING_BOUND = (
    frozenset({"properties", "patternProperties", "additionalProperties", "unevaluatedProperties"}),
    frozenset({"prefixItems", "items", "unevaluatedItems", "contains"}),
)


def _fold(node: dict[str, Any], branch: dict[str, Any]) -> dict[str, Any] | None:
    """``node`` and ``branch`` as one schema object, or None when they do not combine."""
    for group in _SIBLING_BOUND:
        if group & node.keys() and group & branch.keys():
            return None
    if "$ref" in branch or "$ref" in node:
        return None
    result = dict(node)
    for key, value in branch.items():
        if key not in ASSERTIONS or key not in result:
            result.setdefault(key, value)
        elif key == "required":
            result[key] = list(dict.fromkeys([*result[key], *value]))
        elif not json_equal(result[key], value):
            return None
    return result


def _index(document: object) -> Index | None:
    try:
        return Index(document)
    except Exception:  # a document that does not compile is reported by compile_version
        return None


def _governing(name: str, patterns: dict[str, Any], rest: Any) -> Any:
    """The schema a field of this name falls under when it is not a listed property."""
    matching = [s for p, s in patterns.items() if re.search(p, name) is not None]
    if not matching:
        return rest
    return matching[0] if len(matching) == 1 else {"allOf": matching}


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


def _listed(node: dict[str, Any]) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    values = node.get("enum")
    return list(values) if isinstance(values, list) else None
