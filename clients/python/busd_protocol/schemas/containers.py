"""The keywords of arrays and maps, fused with the type test (see types.py for the rules
every builder follows): items, prefixItems, contains, uniqueItems; properties, required,
patternProperties, additionalProperties, propertyNames, dependentRequired, dependentSchemas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from busd_protocol.schemas.refs import escape
from busd_protocol.schemas.types import (
    MEMO_ENTRIES,
    MEMO_MAX_CHARS,
    Builder,
    count,
    regex,
    size_failure,
    then,
    type_failure,
)
from busd_protocol.schemas.values import (
    Checker,
    Failure,
    SchemaError,
    accept,
    first_duplicate,
    key_segment,
    show,
)

if TYPE_CHECKING:
    from busd_protocol.schemas.compiler import Compiler

_MISSING = object()


def array(
    compiler: Compiler, schema: dict[str, Any], at: str, extra: tuple[Checker, ...]
) -> Builder:
    low = count(schema, "minItems", at)
    high = count(schema, "maxItems", at)
    prefix: tuple[Checker, ...] = ()
    if "prefixItems" in schema:
        listed = schema["prefixItems"]
        if not isinstance(listed, list) or not listed:
            raise SchemaError(at + "/prefixItems", "expected a non-empty list of schemas")
        prefix = tuple(compiler.node(s, f"{at}/prefixItems/{i}") for i, s in enumerate(listed))
    item: Checker = accept
    if "items" in schema:
        if isinstance(schema["items"], list):
            raise SchemaError(at + "/items", "expected a schema (a list is prefixItems)")
        item = compiler.node(schema["items"], at + "/items")
    contains = compiler.node(schema["contains"], at + "/contains") if "contains" in schema else None
    at_least = count(schema, "minContains", at)
    at_most = count(schema, "maxContains", at)
    unique = schema.get("uniqueItems", False)
    if not isinstance(unique, bool):
        raise SchemaError(at + "/uniqueItems", "expected a boolean")
    wanted = 1 if at_least is None else at_least
    closed = schema.get("items") is False  # no items beyond prefixItems
    label = compiler.label

    def check_contains(value: Any) -> Failure | None:
        assert contains is not None
        found = sum(1 for element in value if contains(element) is None)
        if found < wanted:
            return (
                "",
                f"expected at least {wanted} item{'s' * (wanted != 1)} matching "
                f"contains, got {found}",
            )
        if at_most is not None and found > at_most:
            return (
                "",
                f"expected at most {at_most} item{'s' * (at_most != 1)} matching "
                f"contains, got {found}",
            )
        return None

    def build(expected: str | None) -> Checker:
        after = then(extra)
        n_prefix = len(prefix)

        def check_array(value: Any) -> Failure | None:
            if expected is not None and type(value) is not list and type(value) is not tuple:
                return type_failure(expected, value)
            failure = size_failure(len(value), low, high, "item")
            if failure is not None:
                return failure
            for index, check in enumerate(prefix[: len(value)]):
                failure = check(value[index])
                if failure is not None:
                    return (f"[{index}]{failure[0]}", failure[1])
            if item is not accept:
                for index in range(n_prefix, len(value)):
                    failure = item(value[index])
                    if failure is not None:
                        if closed:
                            return (f"[{index}]", f"item not allowed by {label}")
                        return (f"[{index}]{failure[0]}", failure[1])
            if contains is not None:
                failure = check_contains(value)
                if failure is not None:
                    return failure
            if unique:
                pair = first_duplicate(value)
                if pair is not None:
                    return ("", f"expected unique items, got [{pair[0]}] equal to [{pair[1]}]")
            return None if after is None else after(value)

        return check_array

    return build


class Shape(NamedTuple):
    """The object keywords of one schema node."""

    fields: tuple[tuple[str, str, Checker, bool], ...]  # name, path segment, check, required
    known: frozenset[str]
    closed: bool  # additionalProperties: false
    rest: Checker  # additionalProperties as a schema
    names: Checker  # propertyNames
    low: int | None  # minProperties
    high: int | None  # maxProperties
    patterns: tuple[tuple[Callable[[str], object], Checker], ...]  # patternProperties
    depends: tuple[tuple[str, tuple[str, ...]], ...]  # dependentRequired
    dependent: tuple[tuple[str, Checker], ...]  # dependentSchemas


def mapping(
    compiler: Compiler, schema: dict[str, Any], at: str, extra: tuple[Checker, ...]
) -> Builder:
    low = count(schema, "minProperties", at)
    high = count(schema, "maxProperties", at)
    properties = _object_of(schema, "properties", at)
    required = _names(schema.get("required", []), at + "/required")
    fields: list[tuple[str, str, Checker, bool]] = []
    for name, sub in properties.items():
        check = compiler.node(sub, f"{at}/properties/{escape(name)}")
        fields.append((name, key_segment(name), check, name in required))
    fields.extend(
        (name, key_segment(name), accept, True) for name in required if name not in properties
    )
    closed = schema.get("additionalProperties", True) is False
    rest = compiler.node(schema.get("additionalProperties", True), at + "/additionalProperties")
    names = compiler.node(schema.get("propertyNames", True), at + "/propertyNames")
    patterns = tuple(
        (
            regex(key, f"{at}/patternProperties/{escape(key)}").search,
            compiler.node(sub, f"{at}/patternProperties/{escape(key)}"),
        )
        for key, sub in _object_of(schema, "patternProperties", at).items()
    )
    depends = tuple(
        (key, tuple(_names(listed, f"{at}/dependentRequired/{escape(key)}")))
        for key, listed in _object_of(schema, "dependentRequired", at).items()
    )
    dependent = tuple(
        (key, compiler.node(sub, f"{at}/dependentSchemas/{escape(key)}"))
        for key, sub in _object_of(schema, "dependentSchemas", at).items()
    )
    shape = Shape(
        tuple(fields),
        frozenset(properties),
        closed,
        rest,
        names,
        low,
        high,
        patterns,
        depends,
        dependent,
    )
    label = compiler.label
    return lambda expected: _object_checker(expected, shape, label, extra)


def _object_of(schema: dict[str, Any], key: str, at: str) -> dict[str, Any]:
    value = schema.get(key, {})
    if not isinstance(value, dict):
        raise SchemaError(f"{at}/{key}", "expected an object")
    return value


def _names(value: object, at: str) -> list[str]:
    if (
        not isinstance(value, list)
        or not all(isinstance(r, str) for r in value)
        or len(set(value)) != len(value)
    ):
        raise SchemaError(at, "expected a list of distinct strings")
    return value


def _object_checker(
    expected: str | None, shape: Shape, label: str, extra: tuple[Checker, ...]
) -> Checker:
    fields, known, closed, rest, names, low, high, patterns, depends, dependent = shape
    sized = low is not None or high is not None
    # Open maps have every key checked (its type, name and value); closed ones only when
    # names or patterns are constrained or a key is not a known field.
    scan = (
        not closed
        or names is not accept
        or bool(patterns)
        or not known.issuperset(name for name, _, _, _ in fields)
    )
    after = then(extra)
    good_names: set[str] = set()  # keys that passed propertyNames (a pure check): memo
    matching: dict[str, tuple[Checker, ...]] = {}  # key -> its patternProperties: memo

    def bad_name(key: str) -> Failure | None:
        failure = names(key)
        if failure is None:
            if len(key) <= MEMO_MAX_CHARS:
                if len(good_names) >= MEMO_ENTRIES:
                    good_names.clear()
                good_names.add(key)
            return None
        # A pattern failure already quotes the key; other rules do not.
        shown = show(key)
        if failure[1].startswith(shown):
            return ("", f"key {failure[1]}")
        return ("", f"key {shown}: {failure[1]}")

    def patterned(key: str) -> tuple[Checker, ...]:
        found = matching.get(key)
        if found is None:
            found = tuple(check for search, check in patterns if search(key) is not None)
            if len(key) <= MEMO_MAX_CHARS:
                if len(matching) >= MEMO_ENTRIES:
                    matching.clear()
                matching[key] = found
        return found

    def check_object(value: Any) -> Failure | None:
        if expected is not None and type(value) is not dict:
            return type_failure(expected, value)
        if sized:
            failure = size_failure(len(value), low, high, "field")
            if failure is not None:
                return failure
        present = 0
        for name, segment, check, required in fields:
            element = value.get(name, _MISSING)
            if element is _MISSING:
                if required:
                    return (segment, "required field is missing")
                continue
            present += 1
            failure = check(element)
            if failure is not None:
                return (segment + failure[0], failure[1])
        # A closed map holding only known fields has exactly ``present`` keys: no scan.
        if scan or len(value) != present:
            for key, element in value.items():
                if type(key) is not str:
                    return ("", f"map key {show(key)} is not a string")
                if names is not accept and key not in good_names:
                    failure = bad_name(key)
                    if failure is not None:
                        return failure
                if patterns:
                    matched = patterned(key)
                    for check in matched:
                        failure = check(element)
                        if failure is not None:
                            return (key_segment(key) + failure[0], failure[1])
                    if matched:
                        continue
                if key in known:
                    continue
                if closed:
                    return (key_segment(key), f"field not allowed by {label}")
                failure = rest(element)
                if failure is not None:
                    return (key_segment(key) + failure[0], failure[1])
        if depends or dependent:
            failure = check_dependent(value)
            if failure is not None:
                return failure
        return None if after is None else after(value)

    def check_dependent(value: dict[str, Any]) -> Failure | None:
        for key, needed in depends:
            if key in value:
                for name in needed:
                    if name not in value:
                        return (
                            key_segment(name),
                            f"required field is missing (required with {show(key)})",
                        )
        for key, check in dependent:
            if key in value:
                failure = check(value)
                if failure is not None:
                    return failure
        return None

    return check_object
