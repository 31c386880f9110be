"""meta.json's ``state`` declaration (docs/schemas.md §8): parsed into a frozen ``StateRule``,
and every bad declaration refused by the loader and by `busd schemas check`, naming the file
and the field."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, REPO

from busd.schemacheck import main
from busd_protocol.schemas import SchemaLoadError, SchemaSet, StateEnds, StateRule

V1: dict[str, Any] = {
    "type": "object",
    "properties": {
        "app": {"type": "string"},
        "n": {"type": "integer"},
        "state": {"type": "string", "enum": ["up", "down"]},
        "free": {"type": "string"},
        "at": {"type": "integer"},
        "opt": {"type": "string"},
        "f": {"type": "number"},
    },
    "required": ["app", "n", "state", "free", "at", "f"],
}
GOOD = {"key": ["app", "n"], "ttl_s": 60, "ends": {"field": "state", "values": ["down"]}}


def make(tmp_path: Path, state: Any, v1: dict[str, Any] = V1, status: str = "active") -> Path:
    schema = tmp_path / "t"
    schema.mkdir(exist_ok=True)
    meta = {"topics": ["t."], "versions": {"1": status}, "state": state}
    (schema / "meta.json").write_text(json.dumps(meta))
    (schema / "v1.json").write_text(json.dumps(v1))
    return schema


def test_the_shipped_instance_state_schema_is_keyed_by_app_and_instance_id() -> None:
    rules = SchemaSet.load(REPO / "schemas").state_rules()
    assert rules == {
        "instance-state": StateRule(
            key=("app", "instance_id"),
            ttl_s=600.0,
            ends=StateEnds("state", frozenset({"down"})),
            order="reported_at",
        )
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules["instance-state"].ttl_s = 1.0  # type: ignore[misc]


def test_a_rule_survives_its_wire_form_and_judges_payloads() -> None:
    rule = StateRule(("app", "n"), 5.0, StateEnds("state", frozenset({"down", 3})), "at")
    assert StateRule.from_wire(json.loads(json.dumps(rule.wire()))) == rule
    assert rule.key_of({"app": "a", "n": 1}) == ("a", 1)
    assert rule.key_of({"app": "a"}) is None
    assert rule.is_end({"state": "down"}) and rule.is_end({"state": 3})
    assert not rule.is_end({"state": "up"}) and not rule.is_end({"state": 3.0})


# (declaration, reason the loader gives: the file is meta.json)
BAD_SHAPES: list[tuple[Any, str]] = [
    ("app", "state: expected an object"),
    ({"key": ["app"], "ttl": 5}, "state: unknown key 'ttl'"),
    ({}, "state.key: expected a list of 1 to 4 payload field names"),
    ({"key": []}, "state.key: expected a list of 1 to 4 payload field names"),
    ({"key": "app"}, "state.key: expected a list of 1 to 4 payload field names"),
    ({"key": ["a", "b", "c", "d", "e"]}, "state.key: expected a list of 1 to 4"),
    ({"key": ["app", 3]}, "state.key: expected a list of 1 to 4 payload field names"),
    ({"key": ["app", "app"]}, "state.key: a field is named twice"),
    ({"key": ["app"], "ttl_s": 0}, "state.ttl_s: expected a positive number of seconds"),
    ({"key": ["app"], "ttl_s": -1}, "state.ttl_s: expected a positive number of seconds"),
    ({"key": ["app"], "ttl_s": "60"}, "state.ttl_s: expected a positive number of seconds"),
    ({"key": ["app"], "ttl_s": True}, "state.ttl_s: expected a positive number of seconds"),
    ({"key": ["app"], "ends": ["down"]}, "state.ends: expected an object like"),
    ({"key": ["app"], "ends": {"field": "state"}}, "state.ends: expected an object like"),
    (
        {"key": ["app"], "ends": {"field": "state", "values": []}},
        "state.ends.values: expected a list of 1 to 64 strings or integers",
    ),
    (
        {"key": ["app"], "ends": {"field": "state", "values": [1.5]}},
        "state.ends.values: expected a list of 1 to 64 strings or integers",
    ),
    (
        {"key": ["app"], "ends": {"field": 7, "values": ["down"]}},
        "state.ends.field: expected a payload field name",
    ),
    ({"key": ["app"], "order": 5}, "state.order: expected a payload field name"),
]


@pytest.mark.parametrize(("state", "reason"), BAD_SHAPES)
def test_a_malformed_declaration_is_refused_naming_meta_json_and_the_field(
    tmp_path: Path, state: Any, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = make(tmp_path, state)
    with pytest.raises(SchemaLoadError) as caught:
        SchemaSet.load(tmp_path)
    assert caught.value.file == str(schema / "meta.json")
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert main(["check", str(tmp_path)]) == 2
    assert f"{schema / 'meta.json'}: {reason}" in capsys.readouterr().err


# (declaration, reason `busd schemas check` prints for v1.json)
MISFITS: list[tuple[Any, str]] = [
    ({"key": ["opt"]}, "state: v1: key field 'opt' must be a required property"),
    ({"key": ["nope"]}, "state: v1: key field 'nope' must be a required property"),
    ({"key": ["app", "f"]}, "state: v1: key field 'f' must be of type string or integer"),
    (
        {"key": ["app"], "ends": {"field": "state", "values": ["gone"]}},
        "state: v1: ends value 'gone' is not in the enum of 'state'",
    ),
    (
        {"key": ["app"], "ends": {"field": "nope", "values": ["x"]}},
        "state: v1: ends field 'nope' is not a property",
    ),
    (
        {"key": ["app"], "order": "free"},
        "state: v1: order field 'free' must be a required property of type integer",
    ),
    (
        {"key": ["app"], "order": "opt"},
        "state: v1: order field 'opt' must be a required property of type integer",
    ),
]


@pytest.mark.parametrize(("state", "reason"), MISFITS)
def test_a_declaration_that_does_not_fit_a_version_is_refused_naming_the_version_file(
    tmp_path: Path, state: Any, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = make(tmp_path, state)
    with pytest.raises(SchemaLoadError) as caught:
        SchemaSet.load(tmp_path)
    assert (caught.value.file, caught.value.reason) == (str(schema / "v1.json"), reason)
    assert main(["check", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{schema / 'v1.json'}: {reason}"]


def test_a_declaration_needs_an_active_or_deprecated_version(tmp_path: Path) -> None:
    schema = make(tmp_path, GOOD, status="retired")
    with pytest.raises(SchemaLoadError) as caught:
        SchemaSet.load(tmp_path)
    assert caught.value.file == str(schema / "meta.json")
    assert caught.value.reason == "state: no active or deprecated version carries the key"


def test_a_good_declaration_passes_the_check_command(tmp_path: Path) -> None:
    make(tmp_path, {**GOOD, "order": "at"})
    done = subprocess.run(
        [str(BIN / "busd"), "schemas", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert SchemaSet.load(tmp_path).state_rules()["t"] == StateRule(
        ("app", "n"), 60.0, StateEnds("state", frozenset({"down"})), "at"
    )
