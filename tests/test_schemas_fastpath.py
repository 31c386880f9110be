"""The generated fast check agrees with the closure checker, and the gate's one-frame accept
path gives the same verdicts and counts as the full path.

The fast check may only ever say True where the closure checker finds nothing wrong; these
tests hold it to more: the same answer on every value tried, shipped schemas and random ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from busd.kernel.schemas import SchemaGate
from busd_protocol.codes import Code
from busd_protocol.schemas import SchemaError, SchemaSet, compile_fast, compile_schema

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
SHIPPED = sorted(SCHEMAS.glob("*/v*.json"))
pytestmark = pytest.mark.timeout(60)

# Decoded msgpack values, plus the odd ones a publisher can send: bytes keys, huge ints,
# non-finite floats, tuples.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(),
    st.sampled_from([0.0, 1.0, -1.0, math.nan, math.inf]),
    st.text(max_size=12),
    st.binary(max_size=4),
)
KEYS = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["slug", "cmd", "env", "flag", "app", "state", "host", "k", "a"]),
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(KEYS, st.integers(), st.binary(max_size=2)), inner, max_size=4),
    ),
    max_leaves=12,
)


def agree(schema: Any, value: Any) -> None:
    fast = compile_fast(schema, "t v1")(value)
    reference = compile_schema(schema, "t v1")(value)
    assert fast == (reference is None), (schema, value, reference)


def conforming(schema: Any) -> st.SearchStrategy[Any]:
    """Values shaped by ``schema`` (mostly valid), each node sometimes swapped for any value."""
    if not isinstance(schema, dict):
        return ANY
    if "enum" in schema:
        shaped: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif schema.get("type") == "object":
        properties = schema.get("properties", {})
        rest = schema.get("additionalProperties", True)
        required = schema.get("required", [])
        shaped = st.fixed_dictionaries(
            {k: conforming(v) for k, v in properties.items() if k in required},
            optional={k: conforming(v) for k, v in properties.items() if k not in required},
        ).flatmap(
            lambda d: st.sampled_from(  # sometimes a field goes missing or one is added
                [
                    d,
                    d,
                    {**d, "extra": 1},
                    {**d, b"slug": 1},
                    *({k: v for k, v in d.items() if k != gone} for gone in d),
                ]
            )
        )
        if rest is not False:
            shaped = st.builds(
                lambda d, more: {**more, **d},
                shaped,
                st.dictionaries(
                    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z") | KEYS,
                    conforming(rest),
                    max_size=4,
                ),
            )
    elif schema.get("type") == "string":
        if schema.get("format") == "uri":
            shaped = st.sampled_from(
                [
                    "https://a.example/x",
                    "s3://b/c%20d",
                    "x:",
                    "a b:",
                    "https://é.example",
                    "h:%zz",
                    "/rel",
                    "",
                    "urn:a:b",
                    "https://a.example/shop/releases/7?x=1#top",
                ]
            )
        elif schema.get("format") == "hostname":
            shaped = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,3}[a-z0-9])?(?:\.[a-z]{1,3})*\Z")
        elif "pattern" in schema:
            shaped = st.from_regex(schema["pattern"])
        else:
            shaped = st.text(max_size=schema.get("maxLength", 8) + 1)
    elif schema.get("type") == "integer":
        shaped = st.integers(min_value=-1, max_value=2**64)
    else:
        shaped = ANY
    return st.one_of(*[shaped] * 7, ANY)


RELEASE_V1 = {
    "slug": "https://apps.example/shop/releases/42",
    "cmd": "bin/web",
    "env": {"RACK_ENV": "production"},
}
VALID: dict[str, Any] = {
    "release-v1": RELEASE_V1,
    "release-v2": {**RELEASE_V1, "flag": "extra_cpu"},
    "instance-state-v1": {
        "app": "shop",
        "instance_id": "web.1",
        "state": "up",
        "host": "h1",
        "version": "v42",
        "reported_at": 1795791600000000000,
    },
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_fast_check_agrees_with_closure_checker_on_shipped_schemas(path: Path) -> None:
    """For every shipped version, the fast check accepts exactly what the closure checker
    accepts, on payloads shaped by the schema and mutated field by field."""
    document = json.loads(path.read_text())
    fast = compile_fast(document, path.stem)
    reference = compile_schema(document, path.stem)
    seen = {True: 0, False: 0}

    @settings(
        max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(conforming(document))
    def run(value: Any) -> None:
        verdict = fast(value)
        assert verdict == (reference(value) is None), value
        seen[verdict] += 1

    run()
    # Random payloads are mostly invalid, and sometimes none of 400 is valid: the accepting
    # side is exercised for certain with a known-good payload of each shipped version.
    valid = VALID[f"{path.parent.name}-{path.stem}"]
    assert fast(valid) is True and reference(valid) is None
    assert seen[False] > 0


SUBSCHEMAS = st.deferred(lambda: st.one_of(st.booleans(), NODES))
NODES: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(
            st.sampled_from(["string", "integer", "number", "boolean", "array", "object", "null"]),
            st.lists(
                st.sampled_from(["string", "integer", "number", "null"]),
                min_size=1,
                max_size=3,
                unique=True,
            ),
        ),
        "enum": st.lists(
            st.one_of(st.text(max_size=2), st.integers(-2, 2), st.none(), st.booleans()),
            min_size=1,
            max_size=3,
        ),
        "const": st.one_of(st.text(max_size=2), st.integers(-2, 2), st.just(1.0)),
        "minLength": st.integers(0, 3),
        "maxLength": st.integers(0, 5),
        "pattern": st.sampled_from(["^a", "b", "^[a-z]*$"]),
        "format": st.sampled_from(["uri", "hostname", "date-time"]),
        "minimum": st.one_of(st.integers(-3, 3), st.floats(-3, 3)),
        "maximum": st.integers(-3, 3),
        "exclusiveMinimum": st.floats(-3, 3),
        "exclusiveMaximum": st.integers(-3, 2**70),
        "items": SUBSCHEMAS,
        "minItems": st.integers(0, 2),
        "maxItems": st.integers(0, 3),
        "properties": st.dictionaries(KEYS, SUBSCHEMAS, max_size=3),
        "required": st.lists(KEYS, max_size=3, unique=True),
        "additionalProperties": SUBSCHEMAS,
        "propertyNames": SUBSCHEMAS,
        "minProperties": st.integers(0, 2),
        "maxProperties": st.integers(0, 3),
    },
)
# The rest of the 2020-12 vocabulary: applicators, references into $defs, array and map
# keywords, multipleOf. "$ref" names "#/$defs/d", which every generated root defines.
# Branches that often overlap, so a value matching two oneOf branches is common.
OVERLAPPING = st.one_of(
    st.sampled_from(
        [
            True,
            {},
            {"type": "integer"},
            {"minimum": 0},
            {"type": "string"},
            {"maxLength": 2},
            {"type": "object"},
            {"required": ["a"]},
            {"$ref": "#/$defs/d"},
        ]
    ),
    SUBSCHEMAS,
)
APPLIED: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["object", "array", "integer", "string"]),
        "$ref": st.just("#/$defs/d"),
        "allOf": st.lists(OVERLAPPING, min_size=1, max_size=2),
        "anyOf": st.lists(OVERLAPPING, min_size=1, max_size=3),
        "oneOf": st.lists(OVERLAPPING, min_size=1, max_size=3),
        "not": OVERLAPPING,
        "if": OVERLAPPING,
        "then": SUBSCHEMAS,
        "else": SUBSCHEMAS,
        "prefixItems": st.lists(SUBSCHEMAS, min_size=1, max_size=2),
        "items": SUBSCHEMAS,
        "contains": SUBSCHEMAS,
        "minContains": st.integers(0, 2),
        "uniqueItems": st.booleans(),
        "patternProperties": st.dictionaries(st.sampled_from(["^a", "b", "^s"]), SUBSCHEMAS),
        "properties": st.dictionaries(KEYS, SUBSCHEMAS, max_size=2),
        "additionalProperties": SUBSCHEMAS,
        "dependentRequired": st.dictionaries(KEYS, st.lists(KEYS, max_size=2, unique=True)),
        "dependentSchemas": st.dictionaries(KEYS, SUBSCHEMAS, max_size=1),
        "multipleOf": st.sampled_from([2, 3, 0.5, 0.01]),
        "unevaluatedProperties": SUBSCHEMAS,
        "unevaluatedItems": SUBSCHEMAS,
    },
)


# Random seeds every run (database=None): the examples add up over CI runs, so a run takes
# few enough to keep the whole suite within its 6 minutes.
@settings(
    max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(NODES, st.lists(ANY, min_size=1, max_size=6))
def test_fast_check_agrees_with_closure_checker_on_random_schemas(
    schema: dict[str, Any], values: list[Any]
) -> None:
    """Any schema the compiler accepts, any decoded value: the two checks agree."""
    for value in values:
        agree(schema, value)


EDGE_CASES = [
    # (schema, value) pairs where a hand-written fast check most easily goes wrong
    ({"type": "integer"}, True),
    ({"type": "integer"}, 1.0),
    ({"type": "integer"}, 2**200),
    ({"type": "integer", "maximum": 9223372036854775807}, 2**63),
    ({"type": "number"}, False),
    ({"type": "number"}, math.nan),
    ({"type": "number"}, -math.inf),
    ({"type": "number", "minimum": 0.5}, 0),
    ({"type": "boolean"}, 0),
    ({"type": "null"}, 0),
    ({"type": "string"}, b"x"),
    ({"type": "string", "minLength": 1}, ""),
    ({"type": "string", "maxLength": 1}, "é"),
    ({"type": "string", "maxLength": 1}, "\U0001f600"),
    ({"type": "string", "format": "uri"}, "https://x/\u00e9"),
    ({"type": "string", "format": "uri"}, "https://x/%4"),
    ({"type": "string", "pattern": "^[a-z]+$"}, "abc\n"),
    ({"enum": ["a", 1]}, True),
    ({"enum": ["a", 1]}, 1.0),
    ({"enum": ["a"]}, ["a"]),
    ({"const": {"k": [1]}}, {"k": [1.0]}),
    ({"const": 1}, True),
    ({"type": "array", "items": {"type": "integer"}}, (1, 2.0)),
    ({"type": "object"}, {b"k": 1}),
    ({"type": "object"}, {1: 1}),
    ({"type": "object", "additionalProperties": False}, {b"k": 1}),
    ({"type": "object", "required": ["a"], "additionalProperties": False}, {"a": 1}),
    (
        {
            "type": "object",
            "required": ["a"],
            "additionalProperties": False,
            "propertyNames": {"maxLength": 3},
        },
        {"a": 1},
    ),
    ({"type": "object", "properties": {"a": {"type": "string"}}}, {"a": None}),
    (
        {
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"b": {"type": "object", "required": ["c"]}}}
            },
        },
        {"a": {"b": {}}},
    ),
    ({"type": "object", "propertyNames": {"type": "integer"}}, {"a": 1}),
    ({"type": "object", "propertyNames": {"type": "integer"}}, {}),
    *(
        (
            {
                "$defs": {
                    "a": {
                        "type": "object",
                        "properties": {"k": {"const": "a"}, "n": {"type": "integer"}},
                        "required": ["k"],
                    },
                    "b": {
                        "type": "object",
                        "properties": {"k": {"const": "b"}},
                        "required": ["k", "n"],
                    },
                },
                "oneOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}],
            },
            value,
        )
        for value in [
            {"k": "a"},
            {"k": "b"},
            {"k": "b", "n": 1},
            {"k": "a", "n": "x"},
            {"k": 1},
            {},
            1,
        ]
    ),
    *(
        (
            {
                "$defs": {
                    "a": {
                        "properties": {"k": {"const": "a"}, "n": {"type": "integer"}},
                        "required": ["k"],
                    },
                    "b": {"properties": {"k": {"const": "b"}}, "required": ["k", "n"]},
                },
                "oneOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}],
            },
            value,
        )
        for value in [
            {"k": "a"},
            {"k": "b"},
            {"k": "b", "n": 1},
            {"k": "a", "n": "x"},
            {"k": 1},
            {},
            1,
        ]
    ),
    ({"oneOf": [{"const": "a"}, {"enum": ["a", "b"]}]}, "a"),
    ({"oneOf": [{"const": "a"}, {"enum": ["a", "b"]}]}, "b"),
    ({"enum": [1.5, "a"]}, math.nan),
    ({"$defs": {"t": True}, "$ref": "#/$defs/t"}, math.nan),
    ({"$defs": {"t": {}}, "$ref": "#/$defs/t"}, math.nan),
    ({"anyOf": [True, {"type": "string"}]}, {1: 2}),
    ({"anyOf": [{}, {"type": "string"}]}, {1: 2}),
    (
        {
            "type": "object",
            "properties": {'it\'s "odd"\n\\': {"type": "integer"}},
            "required": ['it\'s "odd"\n\\'],
        },
        {'it\'s "odd"\n\\': 1},
    ),
]


@pytest.mark.timeout(240)  # each example compiles and generates code: seconds under load
@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.one_of(APPLIED, st.builds(lambda a, b: {"anyOf": [a, b]}, APPLIED, APPLIED)),
    st.one_of(st.booleans(), NODES, APPLIED),
    st.lists(
        st.one_of(ANY, st.sampled_from([0, 3, -1, "a", "abc", {}, {"a": 1}, [1, 1], []])),
        min_size=1,
        max_size=6,
    ),
)
def test_fast_check_agrees_on_random_schemas_with_applicators_and_refs(
    schema: dict[str, Any], definition: Any, values: list[Any]
) -> None:
    """$ref, allOf/anyOf/oneOf/not/if, prefixItems, contains, uniqueItems, patternProperties,
    dependent*, multipleOf and the unevaluated keywords: the generated check (inlined or
    falling back per node) gives the closure checker's answer. Schemas the compiler refuses
    (a $ref cycle that never descends) are refused by both."""
    document = {**schema, "$defs": {"d": definition}}
    try:
        reference = compile_schema(document, "t v1")
    except SchemaError:
        with pytest.raises(SchemaError):
            compile_fast(document, "t v1")
        return
    fast = compile_fast(document, "t v1")
    for value in values:
        assert fast(value) == (reference(value) is None), (document, value)


@pytest.mark.parametrize(("schema", "value"), EDGE_CASES)
def test_fast_check_agrees_on_edge_cases(schema: dict[str, Any], value: Any) -> None:
    """bool vs int, 1.0 as an integer (refused, as the closure checker does), bytes and int
    keys, non-finite floats, huge ints, unicode lengths, quotes in field names."""
    agree(schema, value)


def test_fast_check_of_boolean_schemas() -> None:
    """A bare true / false schema compiles to a check that accepts all / nothing."""
    assert compile_fast(True, "t v1")({"any": b"thing"}) is True
    assert compile_fast(False, "t v1")(None) is False


def test_recursive_schema_fast_check_agrees_and_bounds_nesting() -> None:
    """A schema referring to itself (a tree) is checked by mutually calling generated
    functions; data nested deeper than MAX_NESTING is refused by both checks."""
    schema = {
        "$defs": {
            "tree": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer"},
                    "kids": {"items": {"$ref": "#/$defs/tree"}},
                },
                "required": ["v"],
            }
        },
        "$ref": "#/$defs/tree",
    }
    fast, reference = compile_fast(schema, "t v1"), compile_schema(schema, "t v1")
    good = {"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": 4}]}]}
    bad = {"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": "4"}]}]}
    assert fast(good) is True and reference(good) is None
    assert fast(bad) is False and reference(bad) == (
        ".kids[1].kids[0].v",
        "expected int, got string",
    )
    deep: Any = {"v": 0}
    for _ in range(60):
        deep = {"v": 0, "kids": [deep]}
    assert fast(deep) is False and reference(deep) == ("", "nested deeper than 100 levels")


def test_deep_schemas_compile_and_agree() -> None:
    """Nesting beyond what is inlined falls back to the closure checker of the deep node."""
    schema: dict[str, Any] = {"type": "integer"}
    value: Any = 1
    for _ in range(40):
        schema = {
            "type": "object",
            "properties": {"a": schema},
            "required": ["a"],
            "additionalProperties": False,
        }
        value = {"a": value}
    assert compile_fast(schema, "deep")(value) is True
    bad = json.loads(json.dumps(value).replace("1", "true"))
    assert compile_fast(schema, "deep")(bad) is False
    assert compile_schema(schema, "deep")(bad) is not None


def test_generated_source_holds_no_schema_text_but_escaped_literals() -> None:
    """Patterns and enum values are bound as constants; a field name is written with repr."""
    name = "x'); import os; ('"
    fast = compile_fast(
        {
            "type": "object",
            "properties": {name: {"type": "string", "pattern": "^ev'il$", "enum": ["ev'il"]}},
        },
        "t v1",
    )
    source = fast.__doc__ or ""
    assert "ev'il" not in source and repr(name) in source
    assert fast({name: "ev'il"}) is True and fast({name: "good"}) is False


def test_schemaset_check_uses_fast_path_with_identical_verdicts() -> None:
    """check and explain agree on valid, invalid, unknown, retired and misrouted messages."""
    schemas = SchemaSet.load(SCHEMAS)
    routes = schemas.routes()
    assert set(routes) == {("release", 1), ("release", 2), ("instance-state", 1)}
    assert routes[("release", 1)][2] is True and routes[("release", 2)][2] is False
    good = {"slug": "https://a.example/1", "cmd": "x", "env": {"A": "b"}}
    for args in [
        ("release.a", "release", 2, good),
        ("release.a", "release", 1, good),
        ("release.a", "release", 2, {**good, "env": {"A": 1}}),
        ("instance.a", "release", 2, good),
        ("release.a", "release", 9, good),
        ("release.a", "nope", 1, good),
        ("release.a", "release", 2, []),
    ]:
        assert schemas.check(*args) == schemas.explain(*args)


def test_gate_fast_path_counts_and_records_as_before() -> None:
    """Accepted messages count per (schema, version) and deprecated uses are recorded by
    publisher; an unhashable schema name (a bug in the caller) raises to the caller."""
    gate = SchemaGate(SchemaSet.load(SCHEMAS))
    good = {"slug": "https://a.example/1", "cmd": "x", "env": {}}
    for _ in range(3):
        assert gate.check("release.a", "release", 1, good, "old") is None
    assert gate.check("release.a", "release", 2, good, "new") is None
    reject = gate.check("release.a", "release", 2, {**good, "env": {"A": 1}}, "new")
    assert reject is not None and reject.code is Code.INVALID
    assert reject.reason == "data.env.A: expected string, got int"
    assert gate.traffic.accepted == {("release", 1): 3, ("release", 2): 1}
    assert gate.traffic.rejected == {("release", 2, "invalid"): 1}
    assert [(u.publisher, u.count) for u in gate.drain_deprecated()] == [("old", 3)]
    with pytest.raises(TypeError):
        gate.check("release.a", ["release"], 2, good, "odd")  # type: ignore[arg-type]
