"""The kernel's schema gate: verdicts as Rejects, per-version counters that survive reloads,
and the bounded record of deprecated-version publishers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import decide

from busd.kernel.admission import Admission
from busd.kernel.schemas import (
    DeprecatedUse,
    SchemaGate,
    SchemaTraffic,
    UnloadedStatistics,
    VersionStatistics,
)
from busd_protocol.codes import Code
from busd_protocol.schemas import FastCheck, Route, SchemaSet

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
pytestmark = pytest.mark.timeout(30)
V1 = {"slug": "https://apps.example/shop/1", "cmd": "bin/web", "env": {}}
V2 = {**V1, "flag": "extra_cpu"}


@pytest.fixture
def gate() -> SchemaGate:
    return SchemaGate(SchemaSet.load(SCHEMAS))


def test_verdicts_become_rejects_with_protocol_codes(gate: SchemaGate) -> None:
    """Every schema verdict maps to its protocol code; accepted messages give None."""
    assert gate.check("release.a", "release", 2, V2, "deployer") is None
    cases = [
        (("release.a", "nope", 1, V1), Code.UNKNOWN_SCHEMA),
        (("release.a", "release", 7, V1), Code.UNKNOWN_VERSION),
        (("instance.a", "release", 2, V2), Code.SCHEMA_NOT_ALLOWED),
        (("release.a", "release", 1, V2), Code.INVALID),
    ]
    for args, code in cases:
        reject = gate.check(*args, publisher="deployer")
        assert reject is not None and reject.code is code
    reject = gate.check("release.a", "release", 1, V2)
    assert reject is not None and reject.reason == "data.flag: field not allowed by release v1"


def test_counters_by_schema_version_and_code(gate: SchemaGate) -> None:
    """Accepted messages are counted per (schema, version), rejections per code too."""
    for _ in range(3):
        gate.check("release.a", "release", 2, V2, "deployer")
    gate.check("release.a", "release", 1, V1, "old")
    gate.check("release.a", "release", 1, V2, "old")
    gate.check("instance.a", "release", 2, V2, "lost")
    stats = gate.statistics()
    release = next(s for s in stats.schemas if s.name == "release")
    assert release.topics == ("release.",)
    assert release.versions == (
        VersionStatistics(1, "deprecated", accepted=1, rejected={"invalid": 1}),
        VersionStatistics(2, "active", accepted=3, rejected={"schema_not_allowed": 1}),
    )


def test_invented_names_and_versions_do_not_grow_the_tables(gate: SchemaGate) -> None:
    """Unknown schemas and versions are counted per code only: a publisher cannot make busd
    remember arbitrary names."""
    for i in range(500):
        gate.check("release.a", f"s{i}", 1, V1, "fuzzer")
        gate.check("release.a", "release", 100 + i, V1, "fuzzer")
    traffic = gate.traffic
    assert traffic.unknown == {"unknown_schema": 500, "unknown_version": 500}
    assert traffic.rejected == {} and traffic.accepted == {}


def test_deprecated_uses_are_recorded_per_publisher_and_drained(gate: SchemaGate) -> None:
    """Accepted messages of a deprecated version are recorded with their publisher; a drain
    returns them once and empties the table. Active versions are not recorded."""
    for _ in range(4):
        gate.check("release.a", "release", 1, V1, "deployer")
    gate.check("release.b", "release", 1, V1, "legacy-ci")
    gate.check("release.a", "release", 2, V2, "deployer")
    gate.check("release.a", "release", 1, V2, "broken")  # rejected: not a use
    assert gate.drain_deprecated() == [
        DeprecatedUse("release", 1, "deployer", 4),
        DeprecatedUse("release", 1, "legacy-ci", 1),
    ]
    assert gate.drain_deprecated() == []
    assert gate.statistics().deprecated_pending == 0


def test_deprecated_record_is_bounded(gate: SchemaGate) -> None:
    """Past ``max_deprecated_keys`` distinct publishers, new ones are only counted as dropped
    while known ones keep counting."""
    gate.traffic.max_deprecated_keys = 3
    for i in range(5):
        gate.check("release.a", "release", 1, V1, f"p{i}")
    gate.check("release.a", "release", 1, V1, "p0")
    assert len(gate.traffic.deprecated) == 3
    assert gate.traffic.deprecated[("release", 1, "p0")] == 2
    assert gate.statistics().deprecated_dropped == 2
    assert gate.traffic.accepted[("release", 1)] == 6


def write_set(root: Path, versions: dict[str, str]) -> SchemaSet:
    (root / "t").mkdir(parents=True, exist_ok=True)
    (root / "t" / "meta.json").write_text(json.dumps({"topics": ["t."], "versions": versions}))
    for number in versions:
        (root / "t" / f"v{number}.json").write_text(json.dumps({"type": "object"}))
    return SchemaSet.load(root)


def test_counters_survive_install_of_a_new_set(tmp_path: Path) -> None:
    """Installing a reloaded set keeps every count; versions no longer loaded are reported
    as unloaded, and a version turned deprecated starts being recorded."""
    gate = SchemaGate(write_set(tmp_path / "a", {"1": "active", "2": "active"}))
    gate.check("t.x", "t", 1, {}, "p")
    gate.check("t.x", "t", 2, {}, "p")
    assert gate.drain_deprecated() == []
    traffic = gate.traffic
    gate.install(write_set(tmp_path / "b", {"1": "deprecated"}))
    assert gate.traffic is traffic
    gate.check("t.x", "t", 1, {}, "p")
    stats = gate.statistics()
    assert stats.schemas[0].versions == (
        VersionStatistics(1, "deprecated", accepted=2, rejected={}),
    )
    assert stats.unloaded == (UnloadedStatistics("t", 2, accepted=1, rejected={}),)
    assert gate.drain_deprecated() == [DeprecatedUse("t", 1, "p", 1)]
    assert gate.check("t.x", "t", 2, {}, "p") is not None
    assert gate.traffic.unknown == {"unknown_version": 1}


def test_shared_traffic_object_carries_over_to_a_new_gate(tmp_path: Path) -> None:
    """A new gate built on the same SchemaTraffic continues its counts."""
    traffic = SchemaTraffic()
    SchemaGate(write_set(tmp_path / "a", {"1": "active"}), traffic).check("t.x", "t", 1, {})
    SchemaGate(write_set(tmp_path / "b", {"1": "active"}), traffic).check("t.x", "t", 1, {})
    assert traffic.accepted == {("t", 1): 2}


def explode(data: Any) -> None:
    if data.get("cmd") == "explode":
        raise RuntimeError("boom")


class BuggySet(SchemaSet):
    """Stands in for a bug inside the compiled checks: judging one payload raises, in the
    generated fast check (``routes``) and in the closure checker (``check``, ``explain``)."""

    def check(self, topic: str, schema: str, version: int, data: Any) -> Any:
        explode(data)
        return super().check(topic, schema, version, data)

    def explain(self, topic: str, schema: str, version: int, data: Any) -> Any:
        explode(data)
        return super().explain(topic, schema, version, data)

    def routes(self) -> dict[tuple[str, int], Route]:
        def buggy(fast: FastCheck) -> FastCheck:
            def check(data: Any) -> bool:
                explode(data)
                return fast(data)

            return check

        return {
            key: (prefixes, buggy(fast), deprecated)
            for key, (prefixes, fast, deprecated) in super().routes().items()
        }


def test_a_checker_bug_is_raised_to_the_caller_and_the_next_message_is_judged() -> None:
    """The kernel hides no exception: a bug in a check raises out of the gate (the broker
    answers ``internal``, counts and logs it); the gate judges the next message as usual."""
    gate = SchemaGate(BuggySet.load(SCHEMAS))
    with pytest.raises(RuntimeError, match="boom"):
        gate.check("release.a", "release", 2, {**V2, "cmd": "explode"}, "p")
    assert gate.check("release.a", "release", 2, V2, "p") is None
    assert gate.traffic.accepted == {("release", 2): 1}


def test_admission_runs_the_gate_after_envelope_checks(gate: SchemaGate) -> None:
    """Through Admission, a valid envelope with a v1-claimed v2 payload is `invalid`."""
    admission = Admission(schemas=gate)
    env = {
        "topic": "release.a",
        "schema": "release",
        "version": 1,
        "id": "m1",
        "publisher": "deployer",
        "ts": 1,
        "data": V2,
    }
    reject = decide(admission, "release.a", env, now=0.0)
    assert reject is not None and reject.code is Code.INVALID
    assert decide(admission, "release.a", {**env, "version": 2}, now=0.0) is None
