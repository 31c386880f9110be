"""The value facts every checker shares: msgpack types as JSON Schema sees them, how reasons
quote values and paths, JSON Schema equality, and the error a refused schema raises."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# (path below the checked value, e.g. ".env.JAVA_OPTS"; what is wrong).
Failure = tuple[str, str]
Checker = Callable[[Any], Failure | None]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

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
TYPE_NAMES: dict[type, str] = {
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


def accept(value: Any) -> Failure | None:
    """The checker of the schema ``true`` (and of keywords that are absent)."""
    return None


def reject(value: Any) -> Failure | None:
    """The checker of the schema ``false``."""
    return ("", "no value is allowed here")


def type_name(value: object) -> str:
    return TYPE_NAMES.get(type(value), type(value).__name__)


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
    """Equality as JSON Schema defines it: 1 == 1.0, but true != 1 and "1" != 1. Iterative,
    so two deeply nested payload values (uniqueItems) cannot exhaust the stack."""
    pairs: list[tuple[object, object]] = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if isinstance(x, bool) or isinstance(y, bool):
            if type(x) is not type(y) or x != y:
                return False
        elif isinstance(x, int | float) and isinstance(y, int | float):
            if x != y:
                return False
        elif isinstance(x, list | tuple) and isinstance(y, list | tuple):
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            pairs.extend((x[k], y[k]) for k in x)
        elif type(x) is not type(y) or x != y:
            return False
    return True


def first_duplicate(items: list[Any] | tuple[Any, ...]) -> tuple[int, int] | None:
    """The indices of the first two items equal as JSON Schema defines it, or None.

    Hashable scalars are grouped in a dict first (bool kept apart from 1, 1 with 1.0), so
    a long array of distinct strings or ints costs one pass; the rest are compared pairwise.
    """
    seen: dict[tuple[object, object], int] = {}
    others: list[int] = []
    for index, item in enumerate(items):
        kind = type(item)
        if kind is str or kind is int or kind is float or kind is bool or item is None:
            # bool and nil apart from numbers; 1 and 1.0 are equal, so one group for both.
            key: tuple[object, object] = (float if kind is int else kind, item)
            earlier = seen.setdefault(key, index)
            if earlier != index:
                return earlier, index
        else:
            for earlier in others:
                if json_equal(items[earlier], item):
                    return earlier, index
            others.append(index)
    return None


def nesting_depth(value: object, limit: int) -> int:
    """How deeply arrays and maps nest in ``value`` (a scalar is 0), counting up to
    ``limit + 1`` at most; iterative, so a deep value cannot exhaust the stack."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if type(node) is dict:
            stack.extend((v, depth + 1) for v in node.values())
        elif type(node) is list or type(node) is tuple:
            stack.extend((v, depth + 1) for v in node)
    return deepest
