"""Generate one flat Python function per schema version: the fast "is it valid?" answer.

The closure checker (compiler.py) explains failures; it pays a call per node. The function
generated here answers only True or False, with every node's checks inlined (``type(x) is
str``, ``len``, precompiled regexes, frozenset membership), so a valid message costs one call.
Callers run the closure checker only when this says False, so reasons never change. The one
rule: it must never accept what the closure checker rejects; when in doubt it says False.

A ``$ref`` target and each ``anyOf`` / ``oneOf`` branch becomes a generated function of its
own (called by name, so a schema may refer to itself); ``allOf`` branches are inlined. A node
using a keyword not in ``INLINED`` (``not``, ``if``, ``contains``, ``uniqueItems``,
``dependentSchemas``, the unevaluated keywords) calls that node's closure checker instead:
exact, only slower. Every generated function is exact, never only "conservative": a branch
under ``oneOf`` that said False for a valid value would make two matches look like one.

Generated source holds no text taken from a schema except literals written with ``repr()``
(field names, lengths); patterns, formats, enum sets and bounds are bound as named constants.
Schemas come from the operator's files only, never from messages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from busd_protocol.schemas.applicators import tagged_union
from busd_protocol.schemas.compiler import ANNOTATIONS, MAX_NESTING, Compiler
from busd_protocol.schemas.formats import (
    BAD_ESCAPE_SEARCH,
    FORMATS,
    URI_PLAIN_FULLMATCH,
    uri_general_ok,
)
from busd_protocol.schemas.fragments import (
    IN_PLACE,
    INLINED,
    MAX_DEPTH,
    MEMO_ENTRIES,
    MEMO_MAX_CHARS,
    MISSING,
    class_name,
    dedent,
    false,
    is_not,
    literal,
    schema_classes,
    sizes,
    true,
)
from busd_protocol.schemas.types import multiple_of
from busd_protocol.schemas.values import json_equal, nesting_depth

FastCheck = Callable[[Any], bool]


def compile_fast(schema: object, label: str, compiler: Compiler | None = None) -> FastCheck:
    """The fast check of ``schema``; ``SchemaError`` if ``compile_schema`` would refuse it.
    ``compiler``: the one that compiled the closure checker, whose string memos it shares."""
    if compiler is None:
        compiler = Compiler(schema, label)
        compiler.root()
    gen = _Generator(compiler)
    entry = gen.function(schema)
    if compiler.recursive:
        # As the closure checker: data nested deeper than MAX_NESTING is refused.
        gen.lines += [
            "def fast(v):",
            f"    if _nesting(v, {MAX_NESTING}) > {MAX_NESTING}: return False",
            f"    return {entry}(v)",
        ]
        gen.constants["_nesting"] = nesting_depth
    else:
        gen.lines.append(f"fast = {entry}")
    source = "\n".join(gen.lines) + "\n"
    namespace: dict[str, Any] = dict(gen.constants)
    exec(compile(source, f"<fast check of {label}>", "exec"), namespace)  # noqa: S102
    fast: FastCheck = namespace["fast"]
    fast.__doc__ = source  # kept for debugging: the generated code is its own description
    return fast


class _Generator:
    """Turns schema nodes into indented source lines that ``return False`` on any failure."""

    def __init__(self, compiler: Compiler) -> None:
        self.compiler = compiler
        self.lines: list[str] = []  # the module: one function per entry, ref target, branch
        self.functions: dict[int, str] = {}  # id(schema) -> name of its generated function
        self.constants: dict[str, Any] = {
            "_M": MISSING,
            "_isfinite": math.isfinite,
            "_json_equal": json_equal,
            "_NoneType": type(None),
            "_uri_plain": URI_PLAIN_FULLMATCH,
            "_uri_general_ok": uri_general_ok,
            "_bad_escape": BAD_ESCAPE_SEARCH,
            "_multiple_of": multiple_of,
            "_true": true,
            "_false": false,
        }
        self.serial = 0

    def function(self, schema: object) -> str:
        """The name of the generated function checking ``schema`` (one per schema node)."""
        if isinstance(schema, bool):
            return "_true" if schema else "_false"
        name = self.functions.get(id(schema))
        if name is not None:
            return name
        self.serial += 1
        name = self.functions[id(schema)] = f"_f{self.serial}"
        body = self.node(schema, "v", 2, None) or ["        pass"]
        self.lines += [
            f"def {name}(v):",
            "    try:",
            *body,
            "    except KeyError:",
            "        return False",
            "    return True",
        ]
        return name

    def fallback(self, schema: object, x: str, pad: str) -> list[str]:
        check = self.const(self.compiler.node(schema, ""), "_R")
        return [f"{pad}if {check}({x}) is not None: return False"]

    def const(self, value: object, prefix: str = "_C") -> str:
        self.serial += 1
        name = f"{prefix}{self.serial}"
        self.constants[name] = value
        return name

    def var(self) -> str:
        self.serial += 1
        return f"x{self.serial}"

    def node(self, schema: object, x: str, depth: int, known: type | None) -> list[str]:
        """Lines checking the value in variable ``x``; ``known`` is its class if certain."""
        pad = "    " * depth
        if schema is True:
            return []
        if not isinstance(schema, dict):  # False (anything else was refused at compile)
            return [pad + "return False"]
        if depth > MAX_DEPTH or any(k not in INLINED and k not in ANNOTATIONS for k in schema):
            return self.fallback(schema, x, pad)
        if known is None and self._checked_elsewhere(schema):
            return self._values(schema, x, pad) + self._applicators(schema, x, depth, known)
        classes = schema_classes(schema)
        branches: list[tuple[tuple[type, ...], list[str]]] = []
        for group in ((str,), (int,), (float,), (list, tuple), (dict,), (bool, type(None))):
            allowed = tuple(c for c in group if classes is None or c in classes)
            if known is not None:
                allowed = tuple(c for c in allowed if c is known)
            if allowed:
                branches.append((allowed, self._kind(schema, allowed[0], x, depth + 1)))
        lines: list[str] = []
        typed = classes is not None
        if known is not None and not branches and typed:
            return [pad + "return False"]
        if not typed and not any(body for _, body in branches):
            pass  # any class, and none has a rule of its own: only enum/const below
        elif known is not None or (len(branches) == 1 and typed):
            # The class is certain (or the only one allowed): one test, then its checks.
            if known is None:
                lines.append(f"{pad}if {is_not(branches[0][0], x)}: return False")
            lines.extend(dedent(branches[0][1]) if branches else [])
        else:
            t = self.var()
            lines.append(f"{pad}{t} = type({x})")
            keyword = "if"
            for allowed, body in branches:
                test = " or ".join(f"{t} is {class_name(c)}" for c in allowed)
                lines.append(f"{pad}{keyword} {test}:")
                lines.extend(body or [pad + "    pass"])
                keyword = "elif"
            if typed:
                lines.append(f"{pad}else: return False")
        lines.extend(self._values(schema, x, pad))
        lines.extend(self._applicators(schema, x, depth, known))
        return lines

    def _target(self, schema: dict[str, Any]) -> object:
        return self.compiler.index.target(schema, self.compiler.pointer(schema))

    def _follow(self, node: object) -> object:
        while isinstance(node, dict) and list(node) == ["$ref"]:
            node = self._target(node)
        return node

    def _checked_elsewhere(self, schema: dict[str, Any]) -> bool:
        """An untyped node whose only rules are const/enum or in-place subschemas needs no
        type dispatch of its own: every schema object refuses non-finite floats and
        non-string map keys (the msgpack rules), so a value equal to a listed JSON value,
        or accepted by a schema object that always applies (a $ref target, an allOf
        branch, some branch of an anyOf / oneOf whose branches are all objects), passed
        those rules there. The closure checker keeps its dispatch; verdicts are the same."""
        if "type" in schema or any(k in INLINED and k not in IN_PLACE for k in schema):
            return False
        return (
            "const" in schema
            or "enum" in schema
            or ("$ref" in schema and isinstance(self._target(schema), dict))
            or any(isinstance(b, dict) for b in schema.get("allOf", ()))
            or any(
                word in schema and all(isinstance(b, dict) for b in schema[word])
                for word in ("anyOf", "oneOf")
            )
        )

    def _applicators(
        self, schema: dict[str, Any], x: str, depth: int, known: type | None
    ) -> list[str]:
        pad = "    " * depth
        lines: list[str] = []
        if "$ref" in schema:
            target = self._target(schema)
            if self.compiler.recursive:
                lines.append(f"{pad}if not {self.function(target)}({x}): return False")
            else:  # no cycle anywhere: the target's checks are inlined
                lines.extend(self.node(target, x, depth, known))
        for branch in schema.get("allOf", ()):
            lines.extend(self.node(branch, x, depth, known))
        if "anyOf" in schema:
            calls = " or ".join(f"{self.function(b)}({x})" for b in schema["anyOf"])
            lines.append(f"{pad}if not ({calls}): return False")
        if "oneOf" in schema:
            if tagged_union(schema["oneOf"], self._follow):  # a tagged union: at most one can match
                calls = " or ".join(f"{self.function(b)}({x})" for b in schema["oneOf"])
                lines.append(f"{pad}if not ({calls}): return False")
            else:
                calls = " + ".join(f"{self.function(b)}({x})" for b in schema["oneOf"])
                lines.append(f"{pad}if ({calls}) != 1: return False")
        return lines

    def _kind(self, schema: dict[str, Any], cls: type, x: str, depth: int) -> list[str]:
        if cls is str:
            return self._string(schema, x, depth)
        if cls is int or cls is float:
            return self._number(schema, x, depth, cls is float)
        if cls is list:
            return self._array(schema, x, depth)
        if cls is dict:
            return self._object(schema, x, depth)
        return []

    def _string(self, schema: dict[str, Any], x: str, depth: int) -> list[str]:
        pad = "    " * depth
        lines = sizes(schema, "minLength", "maxLength", x, pad)
        tests: list[str] = []
        if "pattern" in schema:
            search = self.const(re.compile(schema["pattern"]).search, "_P")
            tests.append(f"{search}({x}) is None")
        if schema.get("format") == "uri":  # is_uri, inlined: a call less on every slug
            tests.append(
                f"(_uri_plain({x}) is None and not _uri_general_ok({x}))"
                f" or ('%' in {x} and _bad_escape({x}) is not None)"
            )
        elif "format" in schema:
            accepts = self.const(FORMATS[schema["format"]][0], "_F")
            tests.append(f"not {accepts}({x})")
        if tests:
            # A remembered string passed this node's every rule (lengths too: they are as
            # pure as the pattern), so a hit skips them all.
            memo = self.const(self.compiler.memo(schema), "_S")
            lines = [
                f"{pad}if {x} not in {memo}:",
                *sizes(schema, "minLength", "maxLength", x, pad + "    "),
                f"{pad}    if {' or '.join(tests)}: return False",
                f"{pad}    if len({x}) <= {MEMO_MAX_CHARS}:",
                f"{pad}        if len({memo}) >= {MEMO_ENTRIES}: {memo}.clear()",
                f"{pad}        {memo}.add({x})",
            ]
        return lines

    def _number(self, schema: dict[str, Any], x: str, depth: int, real: bool) -> list[str]:
        pad = "    " * depth
        lines = [f"{pad}if not _isfinite({x}): return False"] if real else []
        for key, op in (
            ("minimum", "<"),
            ("maximum", ">"),
            ("exclusiveMinimum", "<="),
            ("exclusiveMaximum", ">="),
        ):
            if schema.get(key) is not None:
                lines.append(f"{pad}if {x} {op} {self.const(schema[key])}: return False")
        step = schema.get("multipleOf")
        if step is not None:
            exact = self.const(Fraction(repr(step)))
            if type(step) is int and not real:
                lines.append(f"{pad}if {x} % {literal(step)}: return False")
            else:
                lines.append(
                    f"{pad}if not _multiple_of({x}, {self.const(step)}, {exact}): return False"
                )
        return lines

    def _array(self, schema: dict[str, Any], x: str, depth: int) -> list[str]:
        pad = "    " * depth
        lines = sizes(schema, "minItems", "maxItems", x, pad)
        prefix = schema.get("prefixItems", [])
        for index, sub in enumerate(prefix):
            body = self.node(sub, e := self.var(), depth + 1, None)
            if body:
                lines += [
                    f"{pad}if len({x}) > {literal(index)}:",
                    f"{pad}    {e} = {x}[{literal(index)}]",
                    *body,
                ]
        items = self.node(schema.get("items", True), e := self.var(), depth + 1, None)
        if items:
            rest = f"{x}[{literal(len(prefix))}:]" if prefix else x
            lines += [f"{pad}for {e} in {rest}:", *items]
        return lines

    def _object(self, schema: dict[str, Any], x: str, depth: int) -> list[str]:
        pad = "    " * depth
        lines = sizes(schema, "minProperties", "maxProperties", x, pad)
        properties: dict[str, Any] = schema.get("properties", {})
        required: list[str] = schema.get("required", [])
        rest = schema.get("additionalProperties", True)
        names = schema.get("propertyNames", True)
        # Closed, names free: the closure checker scans keys only when the map has more keys
        # than fields found; so does this, counting the optional fields present.
        counted = rest is False and names is True and all(r in properties for r in required)
        count = self.var()
        if counted:
            lines.append(f"{pad}{count} = {len(required)}")
        for name, sub in properties.items():
            e = self.var()
            body = self.node(sub, e, depth + 1, None)
            if name in required:
                # A missing field raises KeyError, which the generated function's one
                # try/except turns into False: a subscript is cheaper than .get and a test.
                lines.append(f"{pad}{e} = {x}[{literal(name)}]")
                lines.extend(dedent(body))
            else:
                lines.append(f"{pad}{e} = {x}.get({literal(name)}, _M)")
                lines.append(f"{pad}if {e} is not _M:")
                lines.extend([f"{pad}    {count} += 1"] if counted else [])
                lines.extend(body or [f"{pad}    pass"])
        lines.extend(
            f"{pad}if {literal(name)} not in {x}: return False"
            for name in required
            if name not in properties
        )
        for name, needed in schema.get("dependentRequired", {}).items():
            lines.append(f"{pad}if {literal(name)} in {x}:")
            lines.extend(f"{pad}    if {literal(n)} not in {x}: return False" for n in needed)
            lines.extend([f"{pad}    pass"] if not needed else [])
        if counted:
            lines.append(f"{pad}if len({x}) != {count}: return False")
            return lines
        k, e = self.var(), self.var()
        lines.append(f"{pad}for {k}, {e} in {x}.items():")
        inner = pad + "    "
        lines.append(f"{inner}if type({k}) is not str: return False")
        lines.extend(self.node(names, k, depth + 1, str))
        if properties:
            lines.append(f"{inner}if {k} in {self.const(frozenset(properties), '_K')}: continue")
        if rest is False:
            lines.append(f"{inner}return False")
        else:
            lines.extend(self.node(rest, e, depth + 1, None))
        return lines

    def _values(self, schema: dict[str, Any], x: str, pad: str) -> list[str]:
        lines: list[str] = []
        if "const" in schema:
            const = schema["const"]
            if type(const) is str:
                lines.append(
                    f"{pad}if type({x}) is not str or {x} != {self.const(const)}: return False"
                )
            else:
                lines.append(f"{pad}if not _json_equal({x}, {self.const(const)}): return False")
        if "enum" in schema:
            values = schema["enum"]
            if all(type(v) is str for v in values):
                allowed = self.const(frozenset(values), "_E")
                lines.append(f"{pad}if type({x}) is not str or {x} not in {allowed}: return False")
            else:
                listed = self.const(tuple(values), "_E")
                lines.append(
                    f"{pad}if not any(_json_equal({x}, e) for e in {listed}): return False"
                )
        return lines
