"""Service-level assertions: a tiny expression language over named figures, never ``eval``.

An assertion is a named boolean expression such as ``p99_latency_ms < 50 and
publishers_connected >= 1``, checked continuously against busd's live figures
(``busd.ops.figures.Figures``: a figure's name is an attribute of it). Grammar (keywords
lower case; ``#`` is not special)::

    expr       := conjunct ("or" conjunct)*
    conjunct   := negation ("and" negation)*
    negation   := "not" negation | "(" expr ")" | comparison
    comparison := sum ("<" | "<=" | ">" | ">=" | "==" | "!=") sum
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | NUMBER | NAME | "(" sum ")"

Chained comparisons (``0 < x < 5``) are refused: write ``0 < x and x < 5``. Arithmetic is
in floats; a division by zero gives NaN, and every comparison with NaN is false, so such an
assertion counts as violated (the safe direction for an alarm).

This module also turns the ``[assertions.NAME]`` tables of an assertions file (already
parsed from TOML by the caller) into checked ``Assertion`` values.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

MIN_WINDOW = 1.0  # seconds: figures are sampled once a second
MAX_WINDOW = 3600.0  # longer windows belong in Prometheus rules, not in busd's memory
DEFAULT_WINDOW = 60.0
MAX_EXPR_CHARS = 1000
_MAX_DEPTH = 32
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TOKEN = re.compile(
    r"""(?:
    (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\))
)""",
    re.VERBOSE,
)
_WINDOW_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_KEYWORDS = frozenset({"and", "or", "not"})

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _divide(a: float, b: float) -> float:
    return a / b if b != 0 else math.nan


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
}


class ExpressionError(ValueError):
    """An expression does not parse or names an unknown figure; says where and why."""


class AssertionConfigError(ValueError):
    """An assertions file is wrong; the message names the table and key."""


# -- syntax tree -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Num:
    value: float


@dataclass(frozen=True, slots=True)
class Name:
    name: str


@dataclass(frozen=True, slots=True)
class Arith:
    op: str
    left: Value
    right: Value


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Value


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Value
    right: Value


@dataclass(frozen=True, slots=True)
class Logic:
    op: str  # "and" or "or"
    terms: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    term: Condition


Value = Num | Name | Arith | Neg
Condition = Compare | Logic | Not


# -- parsing ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "num", "name", "op", "kw", "end"
    text: str
    col: int  # 1-based column, for messages


def _tokens(source: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while True:
        while pos < len(source) and source[pos].isspace():
            pos += 1
        if pos == len(source):
            break
        match = _TOKEN.match(source, pos)
        if match is None or match.lastgroup is None:
            raise ExpressionError(f"column {pos + 1}: unexpected character {source[pos]!r}")
        kind = match.lastgroup
        text = match.group(kind)
        toks.append(_Tok("kw" if kind == "name" and text in _KEYWORDS else kind, text, pos + 1))
        pos = match.end()
    toks.append(_Tok("end", "", len(source) + 1))
    return toks


class _Parser:
    def __init__(self, source: str, known: Collection[str] | None):
        self.toks = _tokens(source)
        self.pos = 0
        self.known = known
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def fail(self, expected: str) -> ExpressionError:
        tok = self.peek()
        got = "end of expression" if tok.kind == "end" else repr(tok.text)
        return ExpressionError(f"column {tok.col}: expected {expected}, got {got}")

    def expect(self, text: str) -> None:
        if self.peek().text != text or self.peek().kind not in ("op", "kw"):
            raise self.fail(repr(text))
        self.take()

    def nest(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ExpressionError(f"nested more than {_MAX_DEPTH} levels deep")

    def condition(self) -> Condition:
        self.nest()
        terms = [self.conjunct()]
        while self.peek().kind == "kw" and self.peek().text == "or":
            self.take()
            terms.append(self.conjunct())
        self.depth -= 1
        return terms[0] if len(terms) == 1 else Logic("or", tuple(terms))

    def conjunct(self) -> Condition:
        terms = [self.negation()]
        while self.peek().kind == "kw" and self.peek().text == "and":
            self.take()
            terms.append(self.negation())
        return terms[0] if len(terms) == 1 else Logic("and", tuple(terms))

    def negation(self) -> Condition:
        tok = self.peek()
        if tok.kind == "kw" and tok.text == "not":
            self.take()
            self.nest()
            term = self.negation()
            self.depth -= 1
            return Not(term)
        if tok.text == "(" and tok.kind == "op":
            # "(" opens either a condition or arithmetic: try the comparison first.
            start = self.pos
            try:
                return self.comparison()
            except ExpressionError:
                self.pos = start
            self.take()
            inner = self.condition()
            self.expect(")")
            return inner
        return self.comparison()

    def comparison(self) -> Compare:
        left = self.sum()
        tok = self.peek()
        if tok.kind != "op" or tok.text not in _COMPARE:
            raise self.fail("a comparison (<, <=, >, >=, ==, !=)")
        self.take()
        right = self.sum()
        after = self.peek()
        if after.kind == "op" and after.text in _COMPARE:
            raise ExpressionError(
                f"column {after.col}: chained comparison; join two comparisons with 'and'"
            )
        return Compare(tok.text, left, right)

    def sum(self) -> Value:
        left = self.product()
        while self.peek().kind == "op" and self.peek().text in ("+", "-"):
            op = self.take().text
            left = Arith(op, left, self.product())
        return left

    def product(self) -> Value:
        left = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/"):
            op = self.take().text
            left = Arith(op, left, self.unary())
        return left

    def unary(self) -> Value:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "-":
            self.take()
            self.nest()
            operand = self.unary()
            self.depth -= 1
            return Neg(operand)
        if tok.kind == "num":
            self.take()
            return Num(float(tok.text))
        if tok.kind == "name":
            self.take()
            if self.known is not None and tok.text not in self.known:
                raise ExpressionError(
                    f"column {tok.col}: unknown figure {tok.text!r}; "
                    f"known: {', '.join(sorted(self.known))}"
                )
            return Name(tok.text)
        if tok.kind == "op" and tok.text == "(":
            self.take()
            self.nest()
            inner = self.sum()
            self.depth -= 1
            self.expect(")")
            return inner
        raise self.fail("a number or a figure name")


def parse(source: str, known: Collection[str] | None = None) -> Condition:
    """Parse ``source``; with ``known``, every name must be one of them."""
    if len(source) > MAX_EXPR_CHARS:
        raise ExpressionError(f"expression over {MAX_EXPR_CHARS} characters")
    parser = _Parser(source, known)
    if parser.peek().kind == "end":
        raise ExpressionError("empty expression")
    tree = parser.condition()
    if parser.peek().kind != "end":
        raise parser.fail("'and', 'or' or the end of the expression")
    return tree


# -- evaluation ------------------------------------------------------------------------------
def value(node: Value, figures: object) -> float:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Name):
        return float(getattr(figures, node.name))
    if isinstance(node, Neg):
        return -value(node.operand, figures)
    return _ARITH[node.op](value(node.left, figures), value(node.right, figures))


def evaluate(node: Condition, figures: object) -> bool:
    """Whether the condition holds over ``figures``, an object whose attributes are the
    figures (names are checked against the known ones when parsing; a name ``figures``
    lacks raises ``AttributeError``)."""
    if isinstance(node, Compare):
        return _COMPARE[node.op](value(node.left, figures), value(node.right, figures))
    if isinstance(node, Not):
        return not evaluate(node.term, figures)
    if node.op == "and":
        return all(evaluate(t, figures) for t in node.terms)
    return any(evaluate(t, figures) for t in node.terms)


def names(node: Condition | Value) -> frozenset[str]:
    """Every figure the expression reads (for logging the values behind a verdict)."""
    if isinstance(node, Name):
        return frozenset((node.name,))
    if isinstance(node, Num):
        return frozenset()
    if isinstance(node, Neg):
        return names(node.operand)
    if isinstance(node, Not):
        return names(node.term)
    if isinstance(node, Logic):
        return frozenset().union(*(names(t) for t in node.terms))
    return names(node.left) | names(node.right)


# -- assertion files -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Assertion:
    name: str
    source: str
    condition: Condition
    window: float  # seconds
    critical: bool

    def holds(self, figures: object) -> bool:
        return evaluate(self.condition, figures)


def parse_window(text: str) -> float:
    """``"60s"``, ``"500ms"``, ``"5m"`` or ``"1h"`` in seconds."""
    match = _WINDOW_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a duration like 60s, 5m or 1h, got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _window(where: str, table: Mapping[str, Any]) -> float:
    if "window" in table and "window_seconds" in table:
        raise AssertionConfigError(f"{where}: give window or window_seconds, not both")
    raw = table.get("window", table.get("window_seconds", DEFAULT_WINDOW))
    try:
        if isinstance(raw, str):
            seconds = parse_window(raw)
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            seconds = float(raw)
        else:
            raise ValueError(f"expected a duration, got {type(raw).__name__}")
    except ValueError as exc:
        raise AssertionConfigError(f"{where}.window: {exc}") from None
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise AssertionConfigError(
            f"{where}.window: must be between {MIN_WINDOW:g}s and {MAX_WINDOW:g}s, got {seconds:g}s"
        )
    return seconds


_KEYS = frozenset({"expr", "window", "window_seconds", "critical", "description"})


def parse_file(data: Mapping[str, Any], known: Collection[str]) -> tuple[Assertion, ...]:
    """Checked assertions from a parsed TOML document of ``[assertions.NAME]`` tables."""
    extra = set(data) - {"assertions"}
    if extra:
        raise AssertionConfigError(
            f"unknown top-level key(s): {', '.join(sorted(extra))}; "
            "expected [assertions.NAME] tables"
        )
    tables = data.get("assertions", {})
    if not isinstance(tables, Mapping):
        raise AssertionConfigError("assertions: expected tables [assertions.NAME]")
    out = []
    for name, table in tables.items():
        where = f"assertions.{name}"
        if _NAME_RE.fullmatch(name) is None:
            raise AssertionConfigError(f"{where}: a name is 1-64 characters of A-Z a-z 0-9 . _ -")
        if not isinstance(table, Mapping):
            raise AssertionConfigError(f'{where}: expected a table with expr = "..."')
        unknown = set(table) - _KEYS
        if unknown:
            raise AssertionConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
        source = table.get("expr")
        if not isinstance(source, str):
            raise AssertionConfigError(f"{where}.expr: expected a string expression")
        try:
            condition = parse(source, known)
        except ExpressionError as exc:
            raise AssertionConfigError(f"{where}.expr: {exc}") from None
        critical = table.get("critical", False)
        if not isinstance(critical, bool):
            raise AssertionConfigError(f"{where}.critical: expected true or false")
        out.append(Assertion(name, source, condition, _window(where, table), critical))
    return tuple(out)
