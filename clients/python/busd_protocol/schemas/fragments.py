"""Source fragments the fast-check generator (codegen.py) writes, and the facts it needs:
the keywords it inlines, literals, type and size tests, indentation."""

from __future__ import annotations

from typing import Any

from busd_protocol.schemas.values import JSON_TYPES

# As the closure checker: remember up to this many strings that passed a pattern or format.
MEMO_ENTRIES = 1024
MEMO_MAX_CHARS = 256
# Deeper nodes call their closure checker instead of being inlined: Python's compiler limits
# statically nested blocks (20), and a deep schema is rare enough not to matter for speed.
MAX_DEPTH = 12
# Keywords this generator writes code for; a node with any other assertion falls back.
INLINED = frozenset(
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
        "minItems",
        "maxItems",
        "properties",
        "required",
        "dependentRequired",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "$ref",
        "allOf",
        "anyOf",
        "oneOf",
    }
)


def literal(value: str | int) -> str:
    """``value`` as Python source; only exact str and int are ever written into source."""
    if type(value) is not str and type(value) is not int:
        raise TypeError(f"not a literal: {type(value).__name__}")
    return repr(value)


MISSING = object()
IN_PLACE = frozenset({"const", "enum", "$ref", "allOf", "anyOf", "oneOf"})


def true(value: Any) -> bool:
    return True


def false(value: Any) -> bool:
    return False


def schema_classes(schema: dict[str, Any]) -> frozenset[type] | None:
    """The exact classes ``type`` allows, as the closure checker maps them; None: any."""
    if "type" not in schema:
        return None
    names = schema["type"]
    names = [names] if isinstance(names, str) else names
    return frozenset(c for name in names for c in JSON_TYPES[name][0])


def class_name(cls: type) -> str:
    return "_NoneType" if cls is type(None) else cls.__name__


def is_not(classes: tuple[type, ...], x: str) -> str:
    return " and ".join(f"type({x}) is not {class_name(c)}" for c in classes)


def sizes(schema: dict[str, Any], low: str, high: str, x: str, pad: str) -> list[str]:
    # Counts were validated at compile; 2.0 is an integer in JSON Schema, written as 2.
    lo, hi = (None if n is None else int(n) for n in (schema.get(low), schema.get(high)))
    if lo is not None and hi is not None:
        return [f"{pad}if not {literal(lo)} <= len({x}) <= {literal(hi)}: return False"]
    if lo is not None:
        return [f"{pad}if len({x}) < {literal(lo)}: return False"]
    if hi is not None:
        return [f"{pad}if len({x}) > {literal(hi)}: return False"]
    return []


def dedent(lines: list[str]) -> list[str]:
    return [line[4:] for line in lines]
