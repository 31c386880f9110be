"""The official JSON-Schema-Test-Suite (draft2020-12) judged by busd's validator.

Every file of tests/draft2020-12 (not optional/) and the optional/format files of the formats
busd supports run against both checkers, the closure checker (the judge) and the generated
fast check. A schema busd refuses at load counts as refused, never as a failure; every
verdict on an accepted schema must match the suite's, except the documented deviations
below (the same list is in docs/schemas.md, "Deviations from the specification").

Run ``python tests/test_schemas_suite.py`` for the per-keyword table (refused / passed /
failed) of schemas and tests. The suite's files are shipped under
tests/data/json-schema-test-suite/ (MIT licence, see its README.md for source and version).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from busd_protocol.schemas import FORMATS, SchemaError, compile_fast, compile_schema

pytestmark = pytest.mark.timeout(120)

SUITE = Path(__file__).resolve().parent / "data" / "json-schema-test-suite"
DRAFT = SUITE / "tests" / "draft2020-12"
MAIN_FILES = sorted(DRAFT.glob("*.json"))
FORMAT_FILES = sorted(
    p for p in (DRAFT / "optional" / "format").glob("*.json") if p.stem in FORMATS
)
ACCEPTED_AT_LEAST = 0.85

# (file, schema description, test description) -> why busd judges otherwise, on purpose.
_FORMATS_ASSERTED = (
    "busd asserts formats (a value that does not match is refused), where 2020-12 makes "
    "format an annotation by default"
)
DEVIATIONS: dict[tuple[str, str, str], str] = {
    (
        "type.json",
        "integer type matches integers",
        "a float with zero fractional part is an integer",
    ): "integer is a msgpack int only: 1.0 is a float, which consumers decode to a float",
    **{
        (
            "format.json",
            f"{name} format",
            f"invalid {name} string is only an annotation by default",
        ): (_FORMATS_ASSERTED)
        for name in (
            "email",
            "regex",
            "ipv4",
            "ipv6",
            "hostname",
            "date",
            "date-time",
            "time",
            "json-pointer",
            "uri",
            "uri-reference",
            "uuid",
            "duration",
        )
    },
}


@dataclass
class Tally:
    """One file's figures: schemas refused / accepted, tests passed / failed / deviating."""

    refused: int = 0
    accepted: int = 0
    passed: int = 0
    deviations: int = 0
    wrong: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def run_file(path: Path) -> Tally:
    tally = Tally()
    for case in json.loads(path.read_text(encoding="utf-8")):
        try:
            check = compile_schema(case["schema"], "suite v1")
            fast = compile_fast(case["schema"], "suite v1")
        except SchemaError as exc:
            tally.refused += 1
            tally.refusals.append(f"{case['description']}: {exc}")
            continue
        tally.accepted += 1
        for test in case["tests"]:
            key = (path.name, case["description"], test["description"])
            failure = check(test["data"])
            quick = fast(test["data"])
            right = (failure is None) == test["valid"] and quick == test["valid"]
            if right and key not in DEVIATIONS:
                tally.passed += 1
            elif not right and key in DEVIATIONS:
                tally.deviations += 1
            else:
                verdict = "valid" if failure is None else f"invalid ({failure[1]})"
                tally.wrong.append(
                    f"{path.name}: {case['description']}: {test['description']}: "
                    f"expected {'valid' if test['valid'] else 'invalid'}, got {verdict}, "
                    f"fast check {quick}" + (" (listed as a deviation)" if right else "")
                )
    return tally


@pytest.mark.parametrize("path", MAIN_FILES + FORMAT_FILES, ids=lambda p: p.stem)
def test_suite_file_has_no_wrong_verdict(path: Path) -> None:
    """Every accepted schema of the file gets the suite's verdict on every test, from both
    checkers, except the documented deviations (which must still deviate)."""
    tally = run_file(path)
    assert not tally.wrong, "\n".join(tally.wrong)


def test_suite_schemas_are_mostly_accepted() -> None:
    """At least 85 % of the main draft2020-12 schemas load; each refusal names its pointer."""
    tallies = {p.stem: run_file(p) for p in MAIN_FILES}
    accepted = sum(t.accepted for t in tallies.values())
    total = accepted + sum(t.refused for t in tallies.values())
    assert accepted / total >= ACCEPTED_AT_LEAST, report(tallies)
    for tally in tallies.values():
        assert all(": #" in refusal for refusal in tally.refusals), tally.refusals


def test_hostname_judges_a_labels_as_the_idn_hostname_file_does() -> None:
    """An ASCII host name holding "xn--" labels is valid exactly when its A-labels are (the
    suite tests A-labels in idn-hostname.json, a format busd does not support)."""
    check = compile_schema({"type": "string", "format": "hostname"}, "suite v1")
    cases = [
        test
        for case in json.loads((DRAFT / "optional" / "format" / "idn-hostname.json").read_text())
        for test in case["tests"]
        if isinstance(test["data"], str)
        and test["data"].isascii()
        and "xn--" in test["data"].lower()
    ]
    assert cases
    for test in cases:
        assert (check(test["data"]) is None) == test["valid"], test


def test_shipped_suite_is_complete() -> None:
    """The suite files are shipped with their licence; none went missing."""
    assert (SUITE / "LICENSE").is_file() and (SUITE / "README.md").is_file()
    assert len(MAIN_FILES) >= 46 and len(FORMAT_FILES) == len(FORMATS)


def test_every_deviation_is_documented() -> None:
    """docs/schemas.md lists each deviation the suite test allows, by test description."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "schemas.md").read_text()
    for _, _, test in DEVIATIONS:
        assert test in text, test


def report(tallies: dict[str, Tally]) -> str:
    lines = [f"{'keyword file':28s} schemas refused/accepted   tests passed/deviating/wrong"]
    for name, t in tallies.items():
        lines.append(
            f"{name:28s} {t.refused:7d}/{t.accepted:<8d}         "
            f"{t.passed:5d}/{t.deviations}/{len(t.wrong)}"
        )
    accepted = sum(t.accepted for t in tallies.values())
    total = accepted + sum(t.refused for t in tallies.values())
    tests = sum(t.passed + t.deviations + len(t.wrong) for t in tallies.values())
    lines.append(
        f"schemas accepted {accepted} of {total} ({accepted / total:.1%}); tests on them "
        f"{tests}: {sum(t.passed for t in tallies.values())} passed, "
        f"{sum(t.deviations for t in tallies.values())} documented deviations, "
        f"{sum(len(t.wrong) for t in tallies.values())} wrong"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print("draft2020-12 (main):")
    print(report({p.stem: run_file(p) for p in MAIN_FILES}))
    print("\ndraft2020-12 optional/format (supported formats):")
    print(report({p.stem: run_file(p) for p in FORMAT_FILES}))
    if "-v" in sys.argv:
        for p in MAIN_FILES:
            for refusal in run_file(p).refusals:
                print(f"refused: {p.name}: {refusal}")
