"""The keywords of one type, fused with the type test: strings and numbers (arrays and maps
are in containers.py), and what every builder shares.

Each builder validates its keywords at load and returns a function of the reason's expected
type name (``None`` when another node already tested the type) to the fused checker. The
order of checks inside a checker is the order of its reasons: the first failure is reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from busd_protocol.schemas.formats import FORMATS
from busd_protocol.schemas.values import (
    Checker,
    Failure,
    SchemaError,
    json_equal,
    show,
    type_name,
)

Builder = Callable[[str | None], Checker]
# Strings that passed a pattern or format are remembered (the predicates are pure): env
# names, flags and the like repeat from message to message and a set lookup beats a regex.
MEMO_ENTRIES = 1024
MEMO_MAX_CHARS = 256


def count(schema: Mapping[str, Any], key: str, at: str) -> int | None:
    if key not in schema:
        return None
    value = schema[key]
    if type(value) is float and value.is_integer():
        value = int(value)  # 2.0 is an integer in JSON Schema's data model
    if type(value) is not int or value < 0:
        raise SchemaError(f"{at}/{key}", "expected a non-negative integer")
    return value


def type_failure(expected: str, value: object) -> Failure:
    return ("", f"expected {expected}, got {type_name(value)}")


def size_failure(n: int, low: int | None, high: int | None, unit: str) -> Failure | None:
    if low is not None and n < low:
        return ("", f"expected at least {low} {unit}{'s' * (low != 1)}, got {n}")
    if high is not None and n > high:
        return ("", f"expected at most {high} {unit}{'s' * (high != 1)}, got {n}")
    return None


def regex(pattern: object, at: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise SchemaError(at, "expected a string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SchemaError(at, f"invalid regular expression: {exc}") from exc


def values(schema: dict[str, Any], at: str) -> list[Checker]:
    """const and enum: they apply to a value of any type."""
    checks: list[Checker] = []
    if "const" in schema:
        const = schema["const"]
        message = f"expected {show(const)}, got "

        def check_const(value: Any) -> Failure | None:
            return None if json_equal(value, const) else ("", message + show(value))

        checks.append(check_const)
    if "enum" in schema:
        allowed = schema["enum"]
        if not isinstance(allowed, list) or not allowed:
            raise SchemaError(at + "/enum", "expected a non-empty list")
        checks.append(_enum(allowed))
    return checks


def _enum(allowed: list[Any]) -> Checker:
    message = f"expected one of [{', '.join(show(v) for v in allowed)}], got "
    if all(type(v) is str for v in allowed):
        strings = frozenset(allowed)

        def check_str_enum(value: Any) -> Failure | None:
            if type(value) is str and value in strings:
                return None
            return ("", message + show(value))

        return check_str_enum

    def check_enum(value: Any) -> Failure | None:
        if any(json_equal(value, v) for v in allowed):
            return None
        return ("", message + show(value))

    return check_enum


def then(checks: tuple[Checker, ...]) -> Checker | None:
    """The keywords of any type, run after the fused ones (None: there are none)."""
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def run_all(value: Any) -> Failure | None:
        for check in checks:
            failure = check(value)
            if failure is not None:
                return failure
        return None

    return run_all


def string(schema: dict[str, Any], at: str, extra: tuple[Checker, ...], memo: set[str]) -> Builder:
    low = count(schema, "minLength", at)
    high = count(schema, "maxLength", at)
    pattern = schema.get("pattern")
    search = regex(pattern, at + "/pattern").search if "pattern" in schema else None
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
    lo = 0 if low is None else low
    hi = math.inf if high is None else high
    slow = search is not None or accepts is not None

    def build(expected: str | None) -> Checker:
        after = then(extra)

        if expected is not None and not slow and after is None:

            def check_plain_string(value: Any) -> Failure | None:
                if type(value) is not str:
                    return type_failure(expected, value)
                n = len(value)
                if n < lo or n > hi:
                    return size_failure(n, low, high, "character")
                return None

            return check_plain_string

        def check_string(value: Any) -> Failure | None:
            if expected is not None and type(value) is not str:
                return type_failure(expected, value)
            n = len(value)
            if n < lo or n > hi:
                return size_failure(n, low, high, "character")
            if slow and value not in memo:
                if search is not None and search(value) is None:
                    return ("", f"{show(value)} does not match pattern {pattern!r}")
                if accepts is not None and not accepts(value):
                    return ("", f"expected {what}, got {show(value)}")
                if n <= MEMO_MAX_CHARS:
                    if len(memo) >= MEMO_ENTRIES:
                        memo.clear()
                    memo.add(value)
            return None if after is None else after(value)

        return check_string

    return build


def multiple_of(value: int | float, divisor: int | float, exact: Fraction) -> bool:
    """JSON Schema's multipleOf on numbers as written: 19.99 is a multiple of 0.01 (a float
    is read as its shortest decimal form, then divided exactly), and no float overflows."""
    if type(value) is int and type(divisor) is int:
        return value % divisor == 0
    return (Fraction(repr(value)) / exact).denominator == 1


def number(schema: dict[str, Any], at: str, extra: tuple[Checker, ...]) -> Builder:
    bounds: dict[str, float | None] = {}
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        bound = schema.get(key)
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
            raise SchemaError(f"{at}/{key}", "expected a number")
        bounds[key] = bound
    minimum, maximum = bounds["minimum"], bounds["maximum"]
    above, below, step = (
        bounds["exclusiveMinimum"],
        bounds["exclusiveMaximum"],
        bounds["multipleOf"],
    )
    if step is not None and not (step > 0 and math.isfinite(step)):
        raise SchemaError(at + "/multipleOf", "expected a number above 0")
    exact = Fraction(repr(step)) if step is not None else Fraction(1)
    types = schema.get("type")
    integer = types is not None and "number" not in ([types] if isinstance(types, str) else types)

    def build(expected: str | None) -> Checker:
        after = then(extra)

        def check_number(value: Any) -> Failure | None:
            kind = type(value)
            if kind is not int:
                if expected is not None and (integer or kind is not float):
                    return type_failure(expected, value)
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
            if step is not None and not multiple_of(value, step, exact):
                return ("", f"expected a multiple of {step!r}, got {value!r}")
            return None if after is None else after(value)

        return check_number

    return build
