"""Compile a JSON Schema (draft 2020-12, a subset) into a checker of decoded msgpack values.

A schema is compiled once, at load, into nested closures; checking a message then costs a few
dict lookups and type tests per field. A checker returns ``None`` when the value is valid, or
a ``Failure``: the path below the checked value (".env.JAVA_OPTS") and what is wrong
("expected string, got int"). Paths are built only on failure, bottom-up, so valid messages
pay nothing for them.

Keywords outside ``ASSERTIONS`` and ``ANNOTATIONS`` are refused with ``SchemaError``: a schema
must never look stricter than what busd enforces.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from busd_protocol.schemas.formats import FORMATS

Failure = tuple[str, str]
Checker = Callable[[Any], Failure | None]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

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
        "items",
        "minItems",
        "maxItems",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
    }
)
ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
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

# JSON Schema type -> (Python classes of decoded msgpack values, the protocol's name for it).
# bool is never a number (type(True) is bool, not int); a float is never an "integer", even
# 1.0, because msgpack keeps the two apart and a consumer's decoder will too.
JSON_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "string"),
    "integer": ((int,), "int"),
    "number": ((int, float), "float"),
    "boolean": ((bool,), "bool"),
    "array": ((list, tuple), "array"),
    "object": ((dict,), "map"),
    "null": ((type(None),), "nil"),
}
_TYPE_NAMES: dict[type, str] = {
    str: "string",
    int: "int",
    float: "float",
    bool: "bool",
    bytes: "bytes",
    list: "array",
    tuple: "array",
    dict: "map",
    type(None): "nil",
}
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHOW_MAX = 64


class SchemaError(ValueError):
    """A schema document that is invalid or uses what the compiler does not support."""

    def __init__(self, pointer: str, reason: str) -> None:
        self.pointer = "#" + pointer
        self.reason = reason
        super().__init__(f"{self.pointer}: {reason}")


def type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def show(value: object) -> str:
    """A value as reasons quote it: short, never the whole of a big payload."""
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 4] + "...'"
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return type_name(value)


def key_segment(key: str) -> str:
    """How a map key appears in a path: ``.name``, or ``['odd key']`` when it needs quoting."""
    return "." + key if _PLAIN_KEY.fullmatch(key) else f"[{show(key)}]"


def json_equal(a: object, b: object) -> bool:
    """Equality as JSON Schema defines it: 1 == 1.0, but true != 1 and "1" != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def compile_schema(schema: object, label: str) -> Checker:
    """The checker for ``schema``; ``label`` (e.g. "release v1") names it in reasons."""
    return _Compiler(label).node(schema, "")


def _accept(value: Any) -> Failure | None:
    return None


def _reject(value: Any) -> Failure | None:
    return ("", "no value is allowed here")


class _Compiler:
    """Validates a schema document while turning each of its nodes into one closure."""

    def __init__(self, label: str) -> None:
        self.label = label

    def node(self, schema: object, at: str) -> Checker:
        if schema is True:
            return _accept
        if schema is False:
            return _reject
        if not isinstance(schema, dict):
            raise SchemaError(at, "a schema must be an object or a boolean")
        for key in schema:
            if key not in ASSERTIONS and key not in ANNOTATIONS:
                raise SchemaError(at, f"unsupported keyword {key!r}")
        dialect = schema.get("$schema", DIALECT)
        if dialect != DIALECT:
            raise SchemaError(at + "/$schema", f"expected {DIALECT!r}, got {dialect!r}")
        classes, expected = self._types(schema, at)
        extra = tuple(self._values(schema, at))
        builders: dict[type, Callable[[str | None], Checker]] = {
            str: self._string(schema, at, extra),
            int: self._number(schema, at, extra),
            list: self._array(schema, at, extra),
            dict: self._object(schema, at, extra),
        }
        if classes is not None:
            kinds = {_KIND[c] for c in classes}
            if len(kinds) == 1 and (kind := kinds.pop()) in builders:
                # One type (int and float count as one, number): the type test is fused in.
                return builders[kind](expected)
        table: dict[type, Checker] = {}
        for cls in classes if classes is not None else _TYPE_NAMES:
            kind = _KIND[cls]
            table[cls] = builders[kind](None) if kind in builders else _run_all(extra)
        return _dispatch(table, classes is not None, expected, _run_all(extra))

    def _types(self, schema: dict[str, Any], at: str) -> tuple[frozenset[type] | None, str]:
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

    def _string(
        self, schema: dict[str, Any], at: str, extra: tuple[Checker, ...]
    ) -> Callable[[str | None], Checker]:
        low = _count(schema, "minLength", at)
        high = _count(schema, "maxLength", at)
        search: Callable[[str], object] | None = None
        pattern = schema.get("pattern")
        if pattern is not None:
            if not isinstance(pattern, str):
                raise SchemaError(at + "/pattern", "expected a string")
            try:
                search = re.compile(pattern).search
            except re.error as exc:
                raise SchemaError(at + "/pattern", f"invalid regular expression: {exc}") from exc
        accepts: Callable[[str], bool] | None = None
        what = ""
        if "format" in schema:
            name = schema["format"]
            if name not in FORMATS:
                raise SchemaError(
                    at + "/format",
                    f"unsupported format {name!r}; supported: {', '.join(sorted(FORMATS))}",
                )
            accepts, what = FORMATS[name]
        return lambda expected: _string_checker(
            expected,
            extra,
            low=low,
            high=high,
            search=search,
            pattern=pattern,
            accepts=accepts,
            what=what,
        )

    def _number(
        self, schema: dict[str, Any], at: str, extra: tuple[Checker, ...]
    ) -> Callable[[str | None], Checker]:
        bounds: dict[str, float | None] = {}
        for key, name in (
            ("minimum", "minimum"),
            ("maximum", "maximum"),
            ("exclusiveMinimum", "above"),
            ("exclusiveMaximum", "below"),
        ):
            bound = schema.get(key)
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, int | float)
            ):
                raise SchemaError(f"{at}/{key}", "expected a number")
            bounds[name] = bound
        integer = "type" in schema and "number" not in _names(schema["type"])
        return lambda expected: _number_checker(expected, extra, integer=integer, **bounds)

    def _array(
        self, schema: dict[str, Any], at: str, extra: tuple[Checker, ...]
    ) -> Callable[[str | None], Checker]:
        low = _count(schema, "minItems", at)
        high = _count(schema, "maxItems", at)
        item: Checker = _accept
        if "items" in schema:
            if isinstance(schema["items"], list):
                raise SchemaError(at + "/items", "expected a schema (prefixItems is unsupported)")
            item = self.node(schema["items"], at + "/items")
        return lambda expected: _array_checker(expected, low, high, item, extra)

    def _object(
        self, schema: dict[str, Any], at: str, extra: tuple[Checker, ...]
    ) -> Callable[[str | None], Checker]:
        low = _count(schema, "minProperties", at)
        high = _count(schema, "maxProperties", at)
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise SchemaError(at + "/properties", "expected an object")
        required = schema.get("required", [])
        if (
            not isinstance(required, list)
            or not all(isinstance(r, str) for r in required)
            or len(set(required)) != len(required)
        ):
            raise SchemaError(at + "/required", "expected a list of distinct strings")
        fields: list[tuple[str, str, Checker, bool]] = []
        for name, sub in properties.items():
            check = self.node(sub, f"{at}/properties/{_escape(name)}")
            fields.append((name, key_segment(name), check, name in required))
        fields.extend(
            (name, key_segment(name), _accept, True) for name in required if name not in properties
        )
        closed = schema.get("additionalProperties", True) is False
        rest = self.node(schema.get("additionalProperties", True), at + "/additionalProperties")
        names = self.node(schema.get("propertyNames", True), at + "/propertyNames")
        shape = _Shape(tuple(fields), frozenset(properties), closed, rest, names, low, high)
        return lambda expected: _object_checker(expected, shape, self.label, extra)

    def _values(self, schema: dict[str, Any], at: str) -> list[Checker]:
        checks: list[Checker] = []
        if "const" in schema:
            const = schema["const"]
            message = f"expected {show(const)}, got "

            def check_const(value: Any) -> Failure | None:
                return None if json_equal(value, const) else ("", message + show(value))

            checks.append(check_const)
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError(at + "/enum", "expected a non-empty list")
            checks.append(_enum(values))
        return checks


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
# Strings that passed a pattern or format are remembered (the predicates are pure): env
# names, flags and the like repeat from message to message and a set lookup beats a regex.
_MEMO_ENTRIES = 1024
_MEMO_MAX_CHARS = 256


def _names(types: object) -> list[str]:
    return [types] if isinstance(types, str) else list(types) if isinstance(types, list) else []


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _count(schema: Mapping[str, Any], key: str, at: str) -> int | None:
    if key not in schema:
        return None
    value = schema[key]
    if type(value) is not int or value < 0:
        raise SchemaError(f"{at}/{key}", "expected a non-negative integer")
    return value


def _type_failure(expected: str, value: object) -> Failure:
    return ("", f"expected {expected}, got {type_name(value)}")


def _size_failure(n: int, low: int | None, high: int | None, unit: str) -> Failure | None:
    if low is not None and n < low:
        return ("", f"expected at least {low} {unit}{'s' * (low != 1)}, got {n}")
    if high is not None and n > high:
        return ("", f"expected at most {high} {unit}{'s' * (high != 1)}, got {n}")
    return None


def _run_all(checks: tuple[Checker, ...]) -> Checker:
    if not checks:
        return _accept
    if len(checks) == 1:
        return checks[0]

    def run_all(value: Any) -> Failure | None:
        for check in checks:
            failure = check(value)
            if failure is not None:
                return failure
        return None

    return run_all


def _dispatch(table: dict[type, Checker], typed: bool, expected: str, fallback: Checker) -> Checker:
    """A node accepting several types (or any): pick the fused checker by the value's class."""

    def check_dispatch(value: Any) -> Failure | None:
        check = table.get(type(value))
        if check is None:
            return _type_failure(expected, value) if typed else fallback(value)
        return check(value)

    return check_dispatch


def _string_checker(
    expected: str | None,
    extra: tuple[Checker, ...],
    *,
    low: int | None,
    high: int | None,
    search: Callable[[str], object] | None,
    pattern: str | None,
    accepts: Callable[[str], bool] | None,
    what: str,
) -> Checker:
    lo = 0 if low is None else low
    hi = math.inf if high is None else high
    slow = search is not None or accepts is not None
    memo: set[str] = set()
    after = _run_all(extra) if extra else None

    if expected is not None and not slow and after is None:

        def check_plain_string(value: Any) -> Failure | None:
            if type(value) is not str:
                return _type_failure(expected, value)
            n = len(value)
            if n < lo or n > hi:
                return _size_failure(n, low, high, "character")
            return None

        return check_plain_string

    def check_string(value: Any) -> Failure | None:
        if expected is not None and type(value) is not str:
            return _type_failure(expected, value)
        n = len(value)
        if n < lo or n > hi:
            return _size_failure(n, low, high, "character")
        if slow and value not in memo:
            if search is not None and search(value) is None:
                return ("", f"{show(value)} does not match pattern {pattern!r}")
            if accepts is not None and not accepts(value):
                return ("", f"expected {what}, got {show(value)}")
            if n <= _MEMO_MAX_CHARS:
                if len(memo) >= _MEMO_ENTRIES:
                    memo.clear()
                memo.add(value)
        return None if after is None else after(value)

    return check_string


def _number_checker(
    expected: str | None,
    extra: tuple[Checker, ...],
    *,
    integer: bool,
    minimum: float | None,
    maximum: float | None,
    above: float | None,
    below: float | None,
) -> Checker:
    after = _run_all(extra) if extra else None

    def check_number(value: Any) -> Failure | None:
        kind = type(value)
        if kind is not int:
            if expected is not None and (integer or kind is not float):
                return _type_failure(expected, value)
            if not math.isfinite(value):
                return ("", f"expected a finite float, got {value!r}")
        if minimum is not None and value < minimum:
            return ("", f"expected >= {minimum!r}, got {value!r}")
        if maximum is not None and value > maximum:
            return ("", f"expected <= {maximum!r}, got {value!r}")
        if above is not None and value <= above:
            return ("", f"expected > {above!r}, got {value!r}")
        if below is not None and value >= below:
            return ("", f"expected < {below!r}, got {value!r}")
        return None if after is None else after(value)

    return check_number


def _array_checker(
    expected: str | None,
    low: int | None,
    high: int | None,
    item: Checker,
    extra: tuple[Checker, ...],
) -> Checker:
    after = _run_all(extra) if extra else None

    def check_array(value: Any) -> Failure | None:
        if expected is not None and type(value) is not list and type(value) is not tuple:
            return _type_failure(expected, value)
        failure = _size_failure(len(value), low, high, "item")
        if failure is not None:
            return failure
        if item is not _accept:
            for index, element in enumerate(value):
                failure = item(element)
                if failure is not None:
                    return (f"[{index}]{failure[0]}", failure[1])
        return None if after is None else after(value)

    return check_array


def _enum(values: list[Any]) -> Checker:
    message = f"expected one of [{', '.join(show(v) for v in values)}], got "
    if all(type(v) is str for v in values):
        allowed = frozenset(values)

        def check_str_enum(value: Any) -> Failure | None:
            if type(value) is str and value in allowed:
                return None
            return ("", message + show(value))

        return check_str_enum

    def check_enum(value: Any) -> Failure | None:
        if any(json_equal(value, v) for v in values):
            return None
        return ("", message + show(value))

    return check_enum


_MISSING = object()


class _Shape(NamedTuple):
    """The object keywords of one schema node."""

    fields: tuple[tuple[str, str, Checker, bool], ...]  # name, path segment, check, required
    known: frozenset[str]
    closed: bool  # additionalProperties: false
    rest: Checker  # additionalProperties as a schema
    names: Checker  # propertyNames
    low: int | None  # minProperties
    high: int | None  # maxProperties


def _object_checker(
    expected: str | None, shape: _Shape, label: str, extra: tuple[Checker, ...]
) -> Checker:
    fields, known, closed, rest, names, low, high = shape
    sized = low is not None or high is not None
    # Open maps have every key checked (its type, name and value); closed ones only when
    # names are constrained or a key is not a known field.
    scan = not closed or names is not _accept
    after = _run_all(extra) if extra else None
    good_names: set[str] = set()  # keys that passed propertyNames (a pure check): memo

    def bad_name(key: str) -> Failure | None:
        failure = names(key)
        if failure is None:
            if len(key) <= _MEMO_MAX_CHARS:
                if len(good_names) >= _MEMO_ENTRIES:
                    good_names.clear()
                good_names.add(key)
            return None
        # A pattern failure already quotes the key; other rules do not.
        shown = show(key)
        if failure[1].startswith(shown):
            return ("", f"key {failure[1]}")
        return ("", f"key {shown}: {failure[1]}")

    def check_object(value: Any) -> Failure | None:
        if expected is not None and type(value) is not dict:
            return _type_failure(expected, value)
        if sized:
            failure = _size_failure(len(value), low, high, "field")
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
                if names is not _accept and key not in good_names:
                    failure = bad_name(key)
                    if failure is not None:
                        return failure
                if key in known:
                    continue
                if closed:
                    return (key_segment(key), f"field not allowed by {label}")
                failure = rest(element)
                if failure is not None:
                    return (key_segment(key) + failure[0], failure[1])
        return None if after is None else after(value)

    return check_object
