"""The schema compiler's keywords and reasons, and the loader's refusals of broken files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busd_protocol.schemas import (
    FORMATS,
    SchemaError,
    SchemaLoadError,
    SchemaSet,
    compile_fast,
    compile_schema,
)

pytestmark = pytest.mark.timeout(30)


def verdict(schema: dict[str, Any], value: Any) -> str | None:
    """The reason a checker gives for ``value``, as busd words it under ``data``."""
    failure = compile_schema(schema, "t v1")(value)
    return None if failure is None else f"data{failure[0]}: {failure[1]}"


CASES = [
    # (schema, value, expected reason or None)
    ({"type": "string"}, "x", None),
    ({"type": "string"}, 1, "data: expected string, got int"),
    ({"type": "integer"}, 3, None),
    ({"type": "integer"}, 3.0, "data: expected int, got float"),
    ({"type": "integer"}, False, "data: expected int, got bool"),
    ({"type": "number"}, 3, None),
    ({"type": "number"}, 2.5, None),
    ({"type": "number"}, True, "data: expected float, got bool"),
    ({"type": "number"}, math.nan, "data: expected a finite float, got nan"),
    ({"type": "number"}, math.inf, "data: expected a finite float, got inf"),
    ({"type": "boolean"}, 0, "data: expected bool, got int"),
    ({"type": "null"}, None, None),
    ({"type": "null"}, "", "data: expected nil, got string"),
    ({"type": "array"}, (1, 2), None),
    ({"type": "object"}, {}, None),
    ({"type": "object"}, {1: "x"}, "data: map key 1 is not a string"),
    ({"type": "object"}, {b"k": "x"}, "data: map key bytes is not a string"),
    ({"type": ["string", "null"]}, None, None),
    ({"type": ["string", "null"]}, 1, "data: expected string or nil, got int"),
    ({"type": ["integer", "number"]}, "1", "data: expected float, got string"),
    (
        {"type": ["integer", "string"], "minimum": 5, "minLength": 2},
        4,
        "data: expected >= 5, got 4",
    ),
    (
        {"type": ["integer", "string"], "minimum": 5, "minLength": 2},
        "a",
        "data: expected at least 2 characters, got 1",
    ),
    ({"minimum": 5}, "untyped: number rules skip strings", None),
    ({"minimum": 5}, 4, "data: expected >= 5, got 4"),
    ({"enum": ["a", 1, None]}, 1.0, None),
    ({"enum": ["a", 1, None]}, True, "data: expected one of ['a', 1, nil], got true"),
    ({"enum": [[1, 2], {"k": False}]}, {"k": False}, None),
    ({"enum": [[1, 2], {"k": False}]}, [1, 3], "data: expected one of [array, map], got array"),
    ({"const": "v"}, "v", None),
    ({"const": "v"}, "w", "data: expected 'v', got 'w'"),
    ({"type": "string", "minLength": 2, "maxLength": 3}, "ab", None),
    ({"type": "string", "maxLength": 3}, "abcd", "data: expected at most 3 characters, got 4"),
    ({"type": "string", "maxLength": 1}, "é", None),
    ({"type": "string", "pattern": "b"}, "abc", None),
    ({"type": "string", "pattern": "^b"}, "abc", "data: 'abc' does not match pattern '^b'"),
    ({"type": "string", "format": "date-time"}, "2026-05-01T12:00:00.5+02:00", None),
    (
        {"type": "string", "format": "date-time"},
        "2026-02-30T12:00:00Z",
        "data: expected an RFC 3339 date-time, got '2026-02-30T12:00:00Z'",
    ),
    (
        {"type": "string", "format": "date-time"},
        "2026-05-01 12:00:00",
        "data: expected an RFC 3339 date-time, got '2026-05-01 12:00:00'",
    ),
    ({"type": "string", "format": "hostname"}, "a-b.example", None),
    (
        {"type": "string", "format": "hostname"},
        "a" * 64,
        "data: expected a host name, got '" + "a" * 59 + "...'",
    ),
    (
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
        0,
        "data: expected > 0, got 0",
    ),
    (
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
        10,
        "data: expected < 10, got 10",
    ),
    ({"type": "number", "maximum": 1.5}, 1.6, "data: expected <= 1.5, got 1.6"),
    ({"type": "array", "items": {"type": "string"}}, ["a", 2], "data[1]: expected string, got int"),
    ({"type": "array", "minItems": 1}, [], "data: expected at least 1 item, got 0"),
    ({"type": "array", "maxItems": 2}, [1, 2, 3], "data: expected at most 2 items, got 3"),
    (
        {"type": "array", "items": {"type": "object", "required": ["k"]}},
        [{"k": 1}, {}],
        "data[1].k: required field is missing",
    ),
    ({"type": "object", "minProperties": 1}, {}, "data: expected at least 1 field, got 0"),
    (
        {"type": "object", "maxProperties": 1},
        {"a": 1, "b": 2},
        "data: expected at most 1 field, got 2",
    ),
    ({"type": "object", "required": ["a"]}, {"a": None}, None),
    (
        {
            "type": "object",
            "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}},
        },
        {"a": {"b": "x"}},
        "data.a.b: expected int, got string",
    ),
    (
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"x y": "1"},
        "data['x y']: expected int, got string",
    ),
    (
        {"type": "object", "properties": {"a": True}, "additionalProperties": False},
        {"a": 1, "b": 2},
        "data.b: field not allowed by t v1",
    ),
    (
        {"type": "object", "propertyNames": {"maxLength": 2}},
        {"abc": 1},
        "data: key 'abc': expected at most 2 characters, got 3",
    ),
    ({"type": "object", "properties": {"a": False}}, {"a": 1}, "data.a: no value is allowed here"),
    ({"type": "object", "properties": {"a": {"description": "any"}}}, {"a": [1]}, None),
    # the rest of the 2020-12 vocabulary
    ({"type": "integer", "multipleOf": 5}, 7, "data: expected a multiple of 5, got 7"),
    ({"type": "number", "multipleOf": 0.01}, 19.99, None),
    (
        {"type": "number", "multipleOf": 0.01},
        19.999,
        "data: expected a multiple of 0.01, got 19.999",
    ),
    (
        {"type": "array", "uniqueItems": True},
        [1, "a", 1.0],
        "data: expected unique items, got [0] equal to [2]",
    ),
    ({"type": "array", "uniqueItems": True}, [True, 1, [1], [True]], None),
    (
        {"type": "array", "contains": {"type": "string"}},
        [1, 2],
        "data: expected at least 1 item matching contains, got 0",
    ),
    (
        {"type": "array", "contains": {"type": "string"}, "minContains": 2, "maxContains": 2},
        ["a", "b", "c"],
        "data: expected at most 2 items matching contains, got 3",
    ),
    (
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        ["a", 1, 2],
        "data[2]: item not allowed by t v1",
    ),
    (
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
        ["a", "b"],
        "data[1]: expected int, got string",
    ),
    ({"type": "array", "prefixItems": [{"type": "string"}]}, [], None),
    (
        {"type": "object", "patternProperties": {"^x-": {"type": "string"}}},
        {"x-a": 1},
        "data.x-a: expected string, got int",
    ),
    (
        {
            "type": "object",
            "patternProperties": {"^x-": True},
            "additionalProperties": False,
        },
        {"x-a": 1, "y": 2},
        "data.y: field not allowed by t v1",
    ),
    (
        {"type": "object", "dependentRequired": {"card": ["billing"]}},
        {"card": 1},
        "data.billing: required field is missing (required with 'card')",
    ),
    (
        {"type": "object", "dependentSchemas": {"card": {"required": ["cvc"]}}},
        {"card": 1},
        "data.cvc: required field is missing",
    ),
    ({"allOf": [{"type": "object"}, {"required": ["a"]}]}, {}, "data.a: required field is missing"),
    (
        {"anyOf": [{"type": "string"}, {"type": "object", "required": ["a"]}]},
        {},
        "data: no anyOf branch matches (0: expected string, got map; "
        "1: .a: required field is missing)",
    ),
    (
        {"oneOf": [{"type": "integer"}, {"minimum": 0}]},
        3,
        "data: matches oneOf branches 0 and 1, expected exactly one",
    ),
    (
        {"oneOf": [{"type": "integer"}, {"type": "string"}]},
        None,
        "data: no oneOf branch matches (0: expected int, got nil; 1: expected string, got nil)",
    ),
    ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, "x", None),
    ({"not": {"type": "string"}}, "x", 'data: matches the schema under "not"'),
    (
        {
            "if": {"properties": {"k": {"const": "a"}}},
            "then": {"required": ["a"]},
            "else": {"required": ["b"]},
        },
        {"k": "z"},
        "data.b: required field is missing (else: the if schema did not match)",
    ),
    (
        {
            "if": {"properties": {"k": {"const": "a"}}},
            "then": {"required": ["a"]},
            "else": {"required": ["b"]},
        },
        {"k": "a"},
        "data.a: required field is missing (then: the if schema matched)",
    ),
    (
        {
            "$defs": {"pos": {"type": "integer", "minimum": 1}},
            "type": "object",
            "properties": {"n": {"$ref": "#/$defs/pos"}},
        },
        {"n": 0},
        "data.n: expected >= 1, got 0",
    ),
    (
        {"$defs": {"p": {"$anchor": "pos", "minimum": 1}}, "items": {"$ref": "#pos"}},
        [1, 0],
        "data[1]: expected >= 1, got 0",
    ),
    (
        {"type": "object", "properties": {"a": True}, "unevaluatedProperties": False},
        {"a": 1, "b": 2},
        "data.b: field not allowed by t v1",
    ),
    (
        {"type": "array", "prefixItems": [True], "unevaluatedItems": False},
        [1, 2],
        "data[1]: item not allowed by t v1",
    ),
    (
        {
            "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
            "$ref": "#/$defs/node",
        },
        {"next": {"next": {"next": 1}}},
        "data.next.next.next: expected map, got int",
    ),
    ({"type": "string", "format": "uuid"}, "x", "data: expected a UUID, got 'x'"),
    (
        {"type": "string", "format": "email"},
        "a@b@c",
        "data: expected an e-mail address, got 'a@b@c'",
    ),
]


@pytest.mark.parametrize(("schema", "value", "reason"), CASES)
def test_keyword_verdicts(schema: dict[str, Any], value: Any, reason: str | None) -> None:
    """Each supported keyword accepts what it allows and words its refusal with the path."""
    assert verdict(schema, value) == reason


def test_recursive_schemas_refuse_data_nested_too_deeply() -> None:
    """A schema referring to itself judges a linked list level by level, up to 100 levels;
    deeper data is refused with a reason, never a RecursionError."""
    schema = {
        "$defs": {
            "node": {"type": ["object", "null"], "properties": {"next": {"$ref": "#/$defs/node"}}}
        },
        "$ref": "#/$defs/node",
    }
    check = compile_schema(schema, "t v1")
    value: Any = None
    for _ in range(99):
        value = {"next": value}
    assert check(value) is None
    for _ in range(2000):
        value = {"next": value}
    assert check(value) == ("", "nested deeper than 100 levels")


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("date-time", "1963-06-1\u09eaT00:00:00Z"),  # a Bengali 4
        ("date-time", "1998-12-31T23:58:60Z"),  # leap second on the wrong minute
        ("date-time", "1998-12-31T22:59:60Z"),  # ... on the wrong hour
        ("uri", "https://[@example.org/test.txt"),
        ("uri", "http://example.com:abc/path"),
        ("uri", "http://[::ffff:01.2.3.4]"),
        ("uri", "http:/[::1]"),
        ("hostname", "xn--X"),
        ("hostname", "XN--aa---o47jg78q"),
        ("ipv4", "1\u09e8.0.0.1"),
    ],
)
def test_formats_refuse_what_the_issue_found_accepted(fmt: str, value: str) -> None:
    """Non-ASCII digits, misplaced leap seconds, malformed authorities and bad A-labels."""
    assert compile_schema({"type": "string", "format": fmt}, "t v1")(value) is not None


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("date-time", "1998-12-31T15:59:60.123-08:00"),
        ("uri", "https://u:p@[::1]:8080/x?q#f"),
        ("uri", "urn:isbn:0451450523"),
        ("hostname", "example."),  # the DNS root's dot, accepted on purpose
        ("hostname", "xn--4gbwdl.xn--wgbh1c"),
        ("email", '"joe bloggs"@example.com'),
        ("ipv6", "::ffff:1.2.3.4"),
        ("duration", "P1Y2M3DT4H5M6S"),
        ("uuid", "2EB8AA08-AA98-11EA-B4AA-73B441D16380"),
        ("json-pointer", "/a~1b/0"),
    ],
)
def test_formats_accept_valid_values(fmt: str, value: str) -> None:
    assert compile_schema({"type": "string", "format": fmt}, "t v1")(value) is None


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sampled_from(sorted(FORMATS)),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=24)
    | st.sampled_from(["http://[", "a@[IPv6:", "xn--", "P1", "1.2.3.4", "//h:9/", "\ud800@b.c"]),
)
def test_formats_judge_any_string_without_raising(fmt: str, value: str) -> None:
    """Every format predicate answers for any string (surrogates, brackets, stray prefixes):
    an exception would be a bug answered internal, not a verdict."""
    fast = compile_fast({"type": "string", "format": fmt}, "t v1")
    check = compile_schema({"type": "string", "format": fmt}, "t v1")
    assert fast(value) == (check(value) is None)


def test_unique_items_compares_deeply_nested_items_without_recursion() -> None:
    """Two items nested deeper than Python's stack are still compared: equal, and not."""
    deep: Any = 1
    other: Any = 2
    for _ in range(5000):
        deep, other = [deep], [other]
    check = compile_schema({"type": "array", "uniqueItems": True}, "t v1")
    assert check([deep, deep]) == ("", "expected unique items, got [0] equal to [1]")
    assert check([deep, other]) is None


def test_memoised_strings_are_still_judged_by_length() -> None:
    """A string remembered as matching its pattern is still refused when too long elsewhere."""
    check = compile_schema(
        {
            "type": "object",
            "properties": {"a": {"type": "string", "pattern": "^x", "maxLength": 3}},
        },
        "t v1",
    )
    assert check({"a": "xy"}) is None
    assert check({"a": "xy"}) is None
    assert check({"a": "yy"}) == (".a", "'yy' does not match pattern '^x'")
    assert check({"a": "xyzw"}) == (".a", "expected at most 3 characters, got 4")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "$ref": "#/x"}, "#/$ref: '#/x' points at nothing"),
        (
            {"type": "object", "properties": {"a": {"$dynamicRef": "#x"}}},
            "#/properties/a: unsupported keyword '$dynamicRef'",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "https://elsewhere.example/s"}}},
            "#/properties/a/$ref: cannot resolve 'https://elsewhere.example/s': only references",
        ),
        ({"$ref": "#nowhere"}, "#/$ref: no $anchor 'nowhere'"),
        ({"$ref": "#/$defs", "$defs": {}}, "#/$ref: '#/$defs' points inside a non-schema"),
        (
            {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}},
            "#: $ref cycle that never descends into the value (endless)",
        ),
        ({"$defs": {"a": {"contentMediaType": "x"}}}, "#/$defs/a: unsupported keyword"),
        ({"oneOf": []}, "#/oneOf: expected a non-empty list of schemas"),
        ({"multipleOf": 0}, "#/multipleOf: expected a number above 0"),
        ({"uniqueItems": 1}, "#/uniqueItems: expected a boolean"),
        ({"patternProperties": {"(": {}}}, "#/patternProperties/(: invalid regular expression"),
        ({"dependentRequired": {"a": "b"}}, "#/dependentRequired/a: expected a list of distinct"),
        ({"type": "strin"}, "#/type: unknown type 'strin'"),
        ({"type": []}, "#/type: expected a type name or a list of distinct ones"),
        (
            {"type": "string", "format": "idn-email"},
            "#/format: unsupported format 'idn-email'; supported: date, date-time, duration, email",
        ),
        ({"type": "string", "pattern": "("}, "#/pattern: invalid regular expression"),
        ({"type": "string", "minLength": -1}, "#/minLength: expected a non-negative integer"),
        ({"type": "string", "maxLength": 1.5}, "#/maxLength: expected a non-negative integer"),
        ({"type": "number", "minimum": "0"}, "#/minimum: expected a number"),
        ({"enum": []}, "#/enum: expected a non-empty list"),
        ({"required": ["a", "a"]}, "#/required: expected a list of distinct strings"),
        ({"properties": []}, "#/properties: expected an object"),
        ({"items": [{}]}, "#/items: expected a schema (a list is prefixItems)"),
        ({"properties": {"a/b": 3}}, "#/properties/a~1b: a schema must be an object or a boolean"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "#/$schema: expected"),
    ],
)
def test_unsupported_or_invalid_schemas_are_refused(schema: dict[str, Any], message: str) -> None:
    """A schema using anything the compiler does not enforce is refused, naming where."""
    with pytest.raises(SchemaError) as caught:
        compile_schema(schema, "t v1")
    assert str(caught.value).startswith(message)


META = {"topics": ["t."], "versions": {"1": "active"}}
V1 = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


def make_dir(root: Path, files: dict[str, Any]) -> Path:
    """A schemas directory: path -> JSON value, or str / bytes for raw file content."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    return root


def test_directory_loads_and_ignores_non_json_files(tmp_path: Path) -> None:
    """Top-level files, dot-entries and non-.json files are skipped."""
    make_dir(
        tmp_path,
        {
            "README.md": "# x",
            "t/meta.json": META,
            "t/v1.json": V1,
            "t/v1.json~": "{",
            "t/.v2.json.swp": "{",
            ".git/x.json": "{",
            "t/notes.txt": "x",
        },
    )
    schemas = SchemaSet.load(tmp_path)
    assert schemas.check("t.x", "t", 1, {"a": "b"}) is None
    assert [i.name for i in schemas.describe()] == ["t"]


@pytest.mark.parametrize(
    ("files", "file", "reason"),
    [
        (
            {"t/meta.json": META, "t/v1.json": '{"type": "object",'},
            "t/v1.json",
            "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 19",
        ),
        (
            {"t/meta.json": META, "t/v1.json": '{"type": "object", "type": "object"}'},
            "t/v1.json",
            "invalid JSON: duplicate key 'type'",
        ),
        (
            {"t/meta.json": META, "t/v1.json": '{"type": "object", "minimum": NaN}'},
            "t/v1.json",
            "invalid JSON: NaN is not JSON",
        ),
        ({"t/meta.json": META, "t/v1.json": b"{\xff}"}, "t/v1.json", "not UTF-8: byte 1"),
        (
            {"t/meta.json": META, "t/v1.json": {"type": "object", "unevaluatedThings": []}},
            "t/v1.json",
            "#: unsupported keyword 'unevaluatedThings'",
        ),
        (
            {"t/meta.json": META, "t/v1.json": {"type": "string"}},
            "t/v1.json",
            'a message schema must be an object with "type": "object" (data is always a map)',
        ),
        (
            {"t/meta.json": META, "t/v1.json": V1, "t/v2.json": V1},
            "t/v2.json",
            "version 2 has no status in meta.json",
        ),
        (
            {"t/meta.json": {**META, "versions": {"1": "active", "2": "active"}}, "t/v1.json": V1},
            "t/meta.json",
            "version 2 has a status but no file v2.json",
        ),
        (
            {
                "t/meta.json": {**META, "versions": {"1": "active", "3": "active"}},
                "t/v1.json": V1,
                "t/v3.json": V1,
            },
            "t/meta.json",
            "versions must run from 1 without gaps; missing 2",
        ),
        ({"t/v1.json": V1}, "t/meta.json", "missing: every schema needs a meta.json"),
        (
            {"t/meta.json": META, "t/v1.json": V1, "t/v01.json": V1},
            "t/v01.json",
            "unexpected file: expected meta.json or v<N>.json (N from 1, no leading zeros)",
        ),
        (
            {"t/meta.json": META, "t/v1.json": V1, "t/latest.json": V1},
            "t/latest.json",
            "unexpected file",
        ),
        ({"T/meta.json": META, "T/v1.json": V1}, "T", "not a valid schema name"),
        ({"t/meta.json": [], "t/v1.json": V1}, "t/meta.json", "expected a JSON object"),
        (
            {"t/meta.json": {**META, "topic": ["t."]}, "t/v1.json": V1},
            "t/meta.json",
            "unknown key 'topic'; expected assume_compatible, description, state, topics, versions",
        ),
        (
            {"t/meta.json": {**META, "topics": []}, "t/v1.json": V1},
            "t/meta.json",
            "topics: expected a non-empty list of topic prefixes",
        ),
        (
            {"t/meta.json": {**META, "topics": ["a b"]}, "t/v1.json": V1},
            "t/meta.json",
            "topics: 'a b' is not a valid topic prefix",
        ),
        (
            {"t/meta.json": {**META, "versions": {"1": "live"}}, "t/v1.json": V1},
            "t/meta.json",
            "versions: 1: status must be one of active, deprecated, retired, got 'live'",
        ),
        (
            {"t/meta.json": {**META, "versions": {"one": "active"}}, "t/v1.json": V1},
            "t/meta.json",
            "versions: 'one' is not a version number",
        ),
        (
            {"t/meta.json": {**META, "description": 5}, "t/v1.json": V1},
            "t/meta.json",
            "description: expected a string",
        ),
    ],
)
def test_broken_directories_are_refused_naming_file_and_reason(
    tmp_path: Path, files: dict[str, Any], file: str, reason: str
) -> None:
    """Loading refuses bad JSON, invalid schemas, unknown keywords and bad metadata."""
    make_dir(tmp_path, files)
    with pytest.raises(SchemaLoadError) as caught:
        SchemaSet.load(tmp_path)
    assert caught.value.file == str(tmp_path / file)
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert str(caught.value) == f"{tmp_path / file}: {caught.value.reason}"


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError, match="not a directory"):
        SchemaSet.load(tmp_path / "nope")


def test_retired_version_is_refused_pointing_at_newest_usable(tmp_path: Path) -> None:
    """A retired version answers `retired_version`; the reason names what to publish."""
    make_dir(
        tmp_path,
        {
            "t/meta.json": {
                "topics": [""],
                "versions": {"1": "retired", "2": "deprecated", "3": "retired"},
            },
            "t/v1.json": V1,
            "t/v2.json": V1,
            "t/v3.json": V1,
        },
    )
    schemas = SchemaSet.load(tmp_path)
    assert schemas.check("any", "t", 1, {"a": "b"}) == (
        "retired_version",
        "t v1 is retired; publish v2",
    )
    assert schemas.check("any", "t", 2, {"a": "b"}) is None
    assert schemas.status("t", 2) == "deprecated" and schemas.status("t", 9) is None


ALL_KEYWORDS = {
    "type": "object",
    "properties": {
        "s": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^a", "format": "uri"},
        "n": {"type": ["number", "null"], "minimum": 0, "exclusiveMaximum": 10},
        "a": {"type": "array", "items": {"enum": [1, "x", None, [1]]}, "maxItems": 3},
        "m": {
            "type": "object",
            "propertyNames": {"maxLength": 3},
            "minProperties": 1,
            "additionalProperties": {"const": {"k": [True]}},
        },
        "d": {"type": "string", "format": "date-time"},
        "h": {"format": "hostname", "minimum": 1},
    },
    "required": ["s"],
    "additionalProperties": False,
}
decoded = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=4) | st.integers() | st.binary(max_size=2), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["s", "n", "a", "m", "d", "h", "zz"]) | st.text(max_size=3),
        decoded,
        max_size=6,
    )
)
def test_any_decoded_value_gets_a_verdict_never_an_exception(value: dict[Any, Any]) -> None:
    """Whatever msgpack can decode, a checker answers None or a (path, rule) failure."""
    failure = compile_schema(ALL_KEYWORDS, "t v1")(value)
    assert failure is None or (isinstance(failure[0], str) and failure[1])
