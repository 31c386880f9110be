"""`busd schemas check`: each backward-compatibility rule catches its violation with the path;
allowed evolutions pass; the shipped schemas pass; exit codes; the reload gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from busd.schemacheck import IncompatibleSchemas, compatibility_violations, load_checked, main
from busd_protocol.schemas import SchemaLoadError

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
pytestmark = pytest.mark.timeout(30)


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), **rest: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), **rest}


S = {"type": "string"}
# Two variants of a tagged union, and a third one to add.
REL = obj({"kind": {"const": "release"}, "slug": S}, ("kind", "slug"), additionalProperties=False)
RB = obj(
    {"kind": {"const": "rollback"}, "to": {"type": "integer"}},
    ("kind", "to"),
    additionalProperties=False,
)
HOLD = obj({"kind": {"const": "hold"}}, ("kind",), additionalProperties=False)
LIST = {
    "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}, "v": S}}},
    "$ref": "#/$defs/n",
}
BASE = obj(
    {"slug": S, "env": {"type": "object", "additionalProperties": S}},
    ("slug", "env"),
    additionalProperties=False,
)


def violations(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return compatibility_violations(old, new, "t v2")


# One rule per row: (old, new, the single violation expected).
RULES = [
    pytest.param(
        BASE,
        obj({"env": BASE["properties"]["env"]}, ("env",), additionalProperties=False),
        "t v2: data.slug: required field removed",
        id="required-removed",
    ),
    pytest.param(
        BASE,
        {**BASE, "required": ["env"]},
        "t v2: data.slug: field is no longer required",
        id="required-made-optional",
    ),
    pytest.param(
        BASE,
        obj({**BASE["properties"], "flag": S}, ("slug", "env", "flag"), additionalProperties=False),
        "t v2: data.flag: new field is required (new fields must be optional)",
        id="new-field-required",
    ),
    pytest.param(
        obj({"a": S, "b": S}, ("a",)),
        obj({"a": S, "b": S}, ("a", "b")),
        "t v2: data.b: field became required",
        id="optional-made-required",
    ),
    pytest.param(
        BASE,
        obj({**BASE["properties"], "env": S}, ("slug", "env"), additionalProperties=False),
        "t v2: data.env: type changed from map to string",
        id="type-changed",
    ),
    pytest.param(
        obj({"n": {"type": "number"}}),
        obj({"n": {"type": "integer"}}),
        "t v2: data.n: type narrowed from float to int",
        id="type-narrowed",
    ),
    pytest.param(
        obj({"s": S}),
        obj({"s": {"type": ["string", "null"]}}),
        "t v2: data.s: type changed from string to string or nil",
        id="type-widened",
    ),
    pytest.param(
        obj({"e": {"enum": ["a", "b", "c"]}}),
        obj({"e": {"enum": ["a", "c", "d"]}}),
        "t v2: data.e: enum values removed: 'b'",
        id="enum-value-removed",
    ),
    pytest.param(
        obj({"e": S}),
        obj({"e": {"type": "string", "enum": ["a"]}}),
        "t v2: data.e: values restricted to ['a']",
        id="enum-added",
    ),
    pytest.param(
        obj({"c": {"const": 1}}),
        obj({"c": {"const": 2}}),
        "t v2: data.c: enum values removed: 1",
        id="const-changed",
    ),
    pytest.param(
        obj({"s": {"type": "string", "minLength": 1}}),
        obj({"s": {"type": "string", "minLength": 2}}),
        "t v2: data.s: minLength raised from 1 to 2",
        id="minLength-raised",
    ),
    pytest.param(
        obj({"s": {"type": "string", "maxLength": 64}}),
        obj({"s": {"type": "string", "maxLength": 32}}),
        "t v2: data.s: maxLength lowered from 64 to 32",
        id="maxLength-lowered",
    ),
    pytest.param(
        obj({"s": S}),
        obj({"s": {"type": "string", "maxLength": 32}}),
        "t v2: data.s: maxLength 32 added",
        id="maxLength-added",
    ),
    pytest.param(
        obj({"n": {"type": "integer", "minimum": 0}}),
        obj({"n": {"type": "integer", "minimum": 1}}),
        "t v2: data.n: minimum raised from 0 to 1",
        id="minimum-raised",
    ),
    pytest.param(
        obj({"n": {"type": "integer", "maximum": 9}}),
        obj({"n": {"type": "integer", "maximum": 8}}),
        "t v2: data.n: maximum lowered from 9 to 8",
        id="maximum-lowered",
    ),
    pytest.param(
        obj({"n": {"type": "number"}}),
        obj({"n": {"type": "number", "exclusiveMinimum": 0}}),
        "t v2: data.n: exclusiveMinimum 0 added",
        id="exclusiveMinimum-added",
    ),
    pytest.param(
        obj({"a": {"type": "array", "maxItems": 5}}),
        obj({"a": {"type": "array", "maxItems": 4}}),
        "t v2: data.a: maxItems lowered from 5 to 4",
        id="maxItems-lowered",
    ),
    pytest.param(
        obj({"a": {"type": "array"}}),
        obj({"a": {"type": "array", "minItems": 1}}),
        "t v2: data.a: minItems 1 added",
        id="minItems-added",
    ),
    pytest.param(
        obj({"m": {"type": "object", "minProperties": 0}}),
        obj({"m": {"type": "object", "minProperties": 1}}),
        "t v2: data.m: minProperties raised from 0 to 1",
        id="minProperties-raised",
    ),
    pytest.param(
        obj({"s": S}),
        obj({"s": {"type": "string", "pattern": "^a"}}),
        "t v2: data.s: pattern '^a' added",
        id="pattern-added",
    ),
    pytest.param(
        obj({"s": {"type": "string", "pattern": "^a"}}),
        obj({"s": {"type": "string", "pattern": "^ab"}}),
        "t v2: data.s: pattern changed from '^a' to '^ab'",
        id="pattern-changed",
    ),
    pytest.param(
        obj({"s": S}),
        obj({"s": {"type": "string", "format": "uri"}}),
        "t v2: data.s: format 'uri' added",
        id="format-added",
    ),
    pytest.param(
        obj({"a": S}),
        obj({"a": S}, additionalProperties=False),
        "t v2: data: map closed: additionalProperties is now false",
        id="map-closed",
    ),
    pytest.param(
        BASE,
        obj(
            {
                **BASE["properties"],
                "env": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
            ("slug", "env"),
            additionalProperties=False,
        ),
        "t v2: data.env.*: type changed from string to int",
        id="extra-values-narrowed",
    ),
    pytest.param(
        obj({"a": S, "b": S}, additionalProperties=False),
        obj({"a": S}, additionalProperties=False),
        "t v2: data.b: field removed from a closed map",
        id="field-removed-closed",
    ),
    pytest.param(
        obj({"a": S, "b": S}),
        obj({"a": S}),
        "t v2: data.b: optional field removed from an open map (it could now hold any value)",
        id="field-removed-open",
    ),
    pytest.param(
        obj({"a": S, "b": S}, additionalProperties={"type": "integer"}),
        obj({"a": S}, additionalProperties={"type": "integer"}),
        "t v2: data.b: type changed from string to int",
        id="field-removed-typed-rest",
    ),
    pytest.param(
        obj({"a": S}),
        obj({"a": S, "b": S}),
        "t v2: data.b: type narrowed from any to string",
        id="typed-field-open-map",
    ),
    pytest.param(
        obj({"m": {"type": "object"}}),
        obj({"m": {"type": "object", "propertyNames": {"pattern": "^[A-Z]+$"}}}),
        "t v2: data.m (keys): pattern '^[A-Z]+$' added",
        id="property-names-narrowed",
    ),
    pytest.param(
        obj({"a": {"type": "array", "items": S}}),
        obj({"a": {"type": "array", "items": {"type": "integer"}}}),
        "t v2: data.a[]: type changed from string to int",
        id="items-changed",
    ),
    pytest.param(
        obj({"a": S}),
        obj({"a": False}),
        "t v2: data.a: no value is accepted any more",
        id="field-forbidden",
    ),
    # the 2020-12 vocabulary
    pytest.param(
        obj({"a": {"$ref": "#/$defs/x"}}, **{"$defs": {"x": S}}),
        obj({"a": {"$ref": "#/$defs/x"}}, **{"$defs": {"x": {"type": "integer"}}}),
        "t v2: data.a: type changed from string to int",
        id="ref-target-changed",
    ),
    pytest.param(
        {"$defs": {"base": BASE}, "$ref": "#/$defs/base"},
        {"$defs": {"base": BASE}, "$ref": "#/$defs/base", "minProperties": 3},
        "t v2: data: minProperties 3 added",
        id="ref-with-sibling-rule",
    ),
    pytest.param(
        obj({"c": {"oneOf": [REL, RB]}}),
        obj({"c": {"oneOf": [REL]}}),
        "t v2: data.c: oneOf branch 1 removed (values matching it are refused)",
        id="oneOf-branch-removed",
    ),
    pytest.param(
        obj({"c": {"oneOf": [REL, RB]}}),
        obj({"c": {"oneOf": [REL, {**RB, "properties": {**RB["properties"], "to": S}}]}}),
        "t v2: data.c (oneOf 1).to: type changed from int to string",
        id="oneOf-branch-changed",
    ),
    pytest.param(
        obj({"c": {"anyOf": [S]}}),
        obj({"c": {"anyOf": [S, {"type": "null"}]}}),
        "t v2: data.c: anyOf branch 1 added (old readers may get values they do not know)",
        id="anyOf-branch-added",
    ),
    pytest.param(
        obj({"c": {"allOf": [S]}}),
        obj({"c": {"allOf": [S, {"maxLength": 3}]}}),
        "t v2: data.c: maxLength 3 added",
        id="allOf-branch-added",
    ),
    pytest.param(
        obj({"c": {"if": S, "then": {"maxLength": 3}}}),
        obj({"c": {"if": S, "then": {"maxLength": 2}}}),
        "t v2: data.c (then): maxLength lowered from 3 to 2",
        id="then-narrowed",
    ),
    pytest.param(
        obj({"a": {"type": "array", "prefixItems": [S]}}),
        obj({"a": {"type": "array", "prefixItems": [{"type": "integer"}]}}),
        "t v2: data.a[0]: type changed from string to int",
        id="prefixItems-changed",
    ),
    pytest.param(
        obj({"a": {"type": "array"}}),
        obj({"a": {"type": "array", "contains": S}}),
        "t v2: data.a: contains added",
        id="contains-added",
    ),
    pytest.param(
        obj({"a": {"type": "array", "contains": S, "minContains": 1}}),
        obj({"a": {"type": "array", "contains": S, "minContains": 2}}),
        "t v2: data.a: minContains raised from 1 to 2",
        id="minContains-raised",
    ),
    pytest.param(
        obj({"a": {"type": "array"}}),
        obj({"a": {"type": "array", "uniqueItems": True}}),
        "t v2: data.a: uniqueItems added",
        id="uniqueItems-added",
    ),
    pytest.param(
        obj({"n": {"type": "integer", "multipleOf": 5}}),
        obj({"n": {"type": "integer", "multipleOf": 10}}),
        "t v2: data.n: multipleOf changed from 5 to 10",
        id="multipleOf-changed",
    ),
    pytest.param(
        obj({"m": {"type": "object", "patternProperties": {"^x-": S}}}),
        obj({"m": {"type": "object", "patternProperties": {"^x-": {**S, "maxLength": 3}}}}),
        "t v2: data.m (keys matching '^x-'): maxLength 3 added",
        id="patternProperties-narrowed",
    ),
    pytest.param(
        obj({"a": S, "b": S}),
        obj({"a": S, "b": S}, dependentRequired={"a": ["b"]}),
        "t v2: data.b: became required with 'a'",
        id="dependentRequired-added",
    ),
    pytest.param(
        obj({"a": S, "b": S}, dependentRequired={"a": ["b"]}),
        obj({"a": S, "b": S}),
        "t v2: data.b: no longer required with 'a'",
        id="dependentRequired-removed",
    ),
    pytest.param(
        obj({"a": S, "b": S}),
        obj({"a": S, "b": S}, dependentSchemas={"a": {"properties": {"b": {"maxLength": 2}}}}),
        "t v2: data (when 'a' is present).b: maxLength 2 added",
        id="dependentSchemas-added",
    ),
    pytest.param(
        obj({"c": {"oneOf": [S, {"type": "integer"}]}}),
        obj({"c": {"oneOf": [S, {"type": "integer"}, {"minimum": 0}]}}),
        "t v2: data.c: cannot decide whether this is compatible: oneOf branch 2 added (a value "
        'may now match two branches); if it is, list "data.c" in meta.json assume_compatible',
        id="oneOf-branch-added-undecidable",
    ),
    pytest.param(
        obj({"c": {"not": S}}),
        obj({"c": {"not": {"type": "integer"}}}),
        "t v2: data.c: cannot decide whether this is compatible: not changed; "
        'if it is, list "data.c" in meta.json assume_compatible',
        id="not-changed-undecidable",
    ),
    pytest.param(
        obj({"a": S}, unevaluatedProperties=False),
        obj({"a": S}),
        "t v2: data: cannot decide whether this is compatible: unevaluatedProperties changed; "
        'if it is, list "data" in meta.json assume_compatible',
        id="unevaluated-changed-undecidable",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), RULES)
def test_each_rule_reports_its_violation_with_the_path(
    old: dict[str, Any], new: dict[str, Any], expected: str
) -> None:
    """Every listed incompatibility is caught, once, with the field's path."""
    assert violations(old, new) == [expected]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(
            BASE,
            obj({**BASE["properties"], "flag": S}, ("slug", "env"), additionalProperties=False),
            id="optional-field-added",
        ),
        pytest.param(
            obj({"e": {"enum": ["a"]}}), obj({"e": {"enum": ["a", "b"]}}), id="enum-value-added"
        ),
        pytest.param(
            obj({"s": {"type": "string", "maxLength": 3, "minLength": 2}}),
            obj({"s": {"type": "string", "maxLength": 4, "minLength": 1}}),
            id="constraints-loosened",
        ),
        pytest.param(
            obj({"s": {"type": "string", "pattern": "^a", "format": "uri"}}),
            obj({"s": S}),
            id="pattern-and-format-dropped",
        ),
        pytest.param(obj({"a": S}, additionalProperties=False), obj({"a": S}), id="map-opened"),
        pytest.param(
            obj({"a": S}, description="x"),
            obj({"a": {**S, "title": "A"}}, title="y"),
            id="annotations-changed",
        ),
        pytest.param(obj({"a": False}), obj({"a": S}), id="forbidden-field-allowed"),
        pytest.param(
            obj({"c": {"oneOf": [REL, RB]}}),
            obj({"c": {"oneOf": [REL, RB, HOLD]}}),
            id="tagged-union-variant-added",
        ),
        pytest.param(BASE, {"$defs": {"base": BASE}, "$ref": "#/$defs/base"}, id="moved-into-defs"),
        pytest.param(
            obj({"n": {"type": "integer", "multipleOf": 10}}),
            obj({"n": {"type": "integer", "multipleOf": 5}}),
            id="multipleOf-loosened",
        ),
        pytest.param(LIST, {**LIST, "title": "a linked list"}, id="recursive-unchanged"),
    ],
)
def test_allowed_evolutions_pass(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Changes a v1 consumer and a v2 consumer both survive raise no violation."""
    assert violations(old, new) == []


def test_recursive_schemas_are_compared_through_their_cycle() -> None:
    """A schema referring to itself is compared once per pair of nodes: a change inside the
    cycle is found, and the walk ends."""
    changed = json.loads(json.dumps(LIST))
    changed["$defs"]["n"]["properties"]["v"] = {"type": "integer"}
    assert violations(LIST, changed) == ["t v2: data.v: type changed from string to int"]


def test_undecidable_changes_pass_only_where_meta_json_vouches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """assume_compatible {"2": [path]} accepts the undecidable lines at that path, and only
    those; a listed path with nothing undecidable is reported."""
    old = obj({"c": {"not": S}, "d": {"not": S}})
    new = obj({"c": {"not": {"type": "integer"}}, "d": {"not": {"type": "integer"}}})
    meta = {"topics": ["t."], "versions": {"1": "active", "2": "active"}}
    write(tmp_path, "t", {**meta, "assume_compatible": {"2": ["data.c"]}}, {1: old, 2: new})
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("t v2: data.d: cannot decide")
    write(tmp_path, "t", {**meta, "assume_compatible": {"2": ["data.c", "data.d", "data.e"]}}, {})
    assert main(["check", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "t v2: data.e: listed in assume_compatible, but nothing there is undecidable"
    ]
    write(tmp_path, "t", {**meta, "assume_compatible": {"2": ["data.c", "data.d"]}}, {})
    assert main(["check", str(tmp_path)]) == 0
    write(tmp_path, "t", {**meta, "assume_compatible": {"2": "data.c"}}, {})
    assert main(["check", str(tmp_path)]) == 2
    assert "assume_compatible: expected an object like" in capsys.readouterr().err


def test_unrelated_rules_under_a_changed_type_are_not_reported() -> None:
    """A field whose type changed reports that once, not every constraint that came along."""
    old = obj({"x": {"type": "string", "maxLength": 3}})
    new = obj({"x": {"type": "integer", "maximum": 3}})
    assert violations(old, new) == ["t v2: data.x: type changed from string to int"]


def write(root: Path, name: str, meta: dict[str, Any], versions: dict[int, Any]) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "meta.json").write_text(json.dumps(meta))
    for number, document in versions.items():
        (root / name / f"v{number}.json").write_text(json.dumps(document))
    return root


def test_shipped_schemas_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """The repository's schemas/ is clean: exit 0 and a one-line summary."""
    assert main(["check", str(SCHEMAS)]) == 0
    assert capsys.readouterr().out == f"{SCHEMAS}: 2 schemas, 3 versions, compatible\n"


def test_violations_print_one_per_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every violation in every schema is listed, metadata problems included."""
    meta = {"topics": ["t."], "versions": {"1": "active", "2": "active", "3": "active"}}
    narrowed = obj({"slug": S, "env": S}, ("slug", "env"), additionalProperties=False)
    write(tmp_path, "t", meta, {1: BASE, 2: narrowed, 3: narrowed})
    write(
        tmp_path,
        "u",
        {"topics": ["u."], "versions": {"1": "active", "3": "active"}},
        {1: BASE, 3: BASE},
    )
    assert main(["check", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path}/u/meta.json: versions must run from 1 without gaps; missing 2",
        "t v2: data.env: type changed from map to string",
    ]


def test_load_errors_and_usage_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be loaded, a missing directory or bad arguments exit 2."""
    write(
        tmp_path,
        "t",
        {"topics": ["t."], "versions": {"1": "active"}},
        {1: {"type": "object", "$dynamicRef": "#a"}},
    )
    assert main(["check", str(tmp_path)]) == 2
    assert "unsupported keyword '$dynamicRef'" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing")]) == 2
    assert main(["check"]) == 2
    assert main(["frobnicate", "x"]) == 2


def test_list_prints_versions_status_and_topics(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", str(SCHEMAS)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "instance-state: v1 active; topics 'instance.'",
        "release: v1 deprecated, v2 active; topics 'release.'",
    ]


def test_reload_gate_refuses_incompatible_or_broken_sets(tmp_path: Path) -> None:
    """load_checked returns a set for a clean directory and refuses, naming the violation,
    one that loads but breaks compatibility, or one that does not load."""
    meta = {"topics": ["t."], "versions": {"1": "active"}}
    write(tmp_path, "t", meta, {1: BASE})
    assert load_checked(tmp_path).status("t", 1) == "active"
    narrowed = obj({"slug": S, "env": S}, ("slug", "env"), additionalProperties=False)
    write(tmp_path, "t", {**meta, "versions": {"1": "active", "2": "active"}}, {2: narrowed})
    with pytest.raises(IncompatibleSchemas) as caught:
        load_checked(tmp_path)
    assert caught.value.violations == ["t v2: data.env: type changed from map to string"]
    (tmp_path / "t" / "v2.json").write_text("{")
    with pytest.raises(SchemaLoadError, match="invalid JSON"):
        load_checked(tmp_path)


def test_module_runs_as_a_command() -> None:
    """`python -m busd.schemacheck check DIR` works without the daemon's CLI wiring."""
    done = subprocess.run(
        [sys.executable, "-m", "busd.schemacheck", "check", str(SCHEMAS)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
