"""The shipped Prometheus rules: promtool checks and unit tests, consistency with busd's real
metrics and with the shipped assertions file, and a real idle busd's scrape fires nothing."""

from __future__ import annotations

import math
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, BusdProcess, wait_for
from opshttp import PROMTOOL, get, needs_promtool, scrape, scrape_text

PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "busd-rules.yml"
POOL_RULES = PROM / "busd-pool-rules.yml"
# Each rule file with the promtool test file that covers its alerts.
RULE_TESTS = {RULES: PROM / "busd-rules.test.yml", POOL_RULES: PROM / "busd-pool-rules.test.yml"}
ASSERTIONS = REPO / "deploy" / "assertions.toml"


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def alerts_of(*rule_files: Path) -> list[str]:
    return [
        name
        for path in rule_files
        for name in re.findall(r"^\s*- alert: (\w+)$", path.read_text(), re.MULTILINE)
    ]


def cases_of(path: Path) -> list[str]:
    """The text of each test case (``- interval:`` item) of a promtool test file, with the
    comment lines that introduce it."""
    return re.split(r"\n\n(?=  # -- )", path.read_text().split("\ntests:\n", 1)[1])


@needs_promtool
@pytest.mark.timeout(60)
def test_promtool_check_rules_accepts_the_shipped_rules() -> None:
    result = promtool("check", "rules", RULES.name, POOL_RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


@needs_promtool
@pytest.mark.timeout(60)
@pytest.mark.parametrize("tests", RULE_TESTS.values(), ids=lambda p: p.name)
def test_promtool_test_rules_passes_the_shipped_unit_tests(tests: Path) -> None:
    result = promtool("test", "rules", tests.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("rules", RULE_TESTS, ids=lambda p: p.name)
def test_every_alert_has_a_unit_test_case_where_it_fires_and_one_where_it_does_not(
    rules: Path,
) -> None:
    alerts = set(alerts_of(rules))
    assert alerts
    # A case "fires" when its exp_alerts list is not empty.
    cases = re.findall(r"alertname: (\w+)\n\s*exp_alerts:(\s*\[\])?", RULE_TESTS[rules].read_text())
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    assert alerts <= firing, f"alerts without a firing case: {alerts - firing}"
    assert alerts <= quiet, f"alerts without a quiet case: {alerts - quiet}"


@pytest.mark.parametrize(
    ("tests", "loaded", "title"),
    [
        (RULE_TESTS[RULES], (RULES,), "a single broker at rest"),
        (RULE_TESTS[POOL_RULES], (RULES, POOL_RULES), "a pool of three at rest"),
        (RULE_TESTS[POOL_RULES], (RULES, POOL_RULES), "a single broker at rest with this file"),
    ],
    ids=["single", "pool", "single-with-pool-rules"],
)
def test_the_at_rest_cases_expect_no_alert_of_any_loaded_rule_file(
    tests: Path, loaded: tuple[Path, ...], title: str
) -> None:
    [case] = [c for c in cases_of(tests) if c.startswith(f"  # -- {title}")]
    quiet = re.findall(r"alertname: (\w+)\n\s*exp_alerts: \[\]", case)
    assert "exp_labels" not in case
    for at in ("30m", "3h"):
        assert f"eval_time: {at}" in case
    assert sorted(set(quiet)) == sorted(alerts_of(*loaded))


def test_every_shipped_assertion_has_one_alert_and_no_second_one() -> None:
    """Each non-critical assertion of deploy/assertions.toml is mirrored by an alert
    annotated `# assertion: <expr>`, and BusdAssertionViolated leaves exactly those (and the
    critical ones, which BusdNotReady reports) to them: one condition, one alert."""
    text = RULES.read_text()
    mirrored = set(re.findall(r"# assertion: (.+)$", text, re.MULTILINE))
    shipped = tomllib.loads(ASSERTIONS.read_text())["assertions"]
    plain = {name: t["expr"] for name, t in shipped.items() if not t.get("critical")}
    assert set(plain.values()) == mirrored
    [excluded] = re.findall(r'busd_assertion_ok\{name!~"([^"]+)"\} == 0', text)
    assert sorted(excluded.split("|")) == sorted(plain)
    assert "unless on (instance, job, name) busd_assertion_critical == 1" in text


@pytest.mark.timeout(30)
def test_every_metric_the_rules_read_is_in_a_real_scrape_of_busd_with_the_shipped_assertions(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(extra_args=("--assertions", str(ASSERTIONS)), start=False)
    (busd.rates_dir / "publish").write_text("500\n")  # per-key families need a key
    busd.start()
    assert get(busd.metrics, "/readyz")[0] == 200  # the shipped critical assertion holds
    exposed = set(re.findall(r"^(busd_\w+?)(?:\{| )", scrape_text(busd.metrics), re.MULTILINE))
    wanted = set(re.findall(r"\b(busd_[a-z_]+)", RULES.read_text() + POOL_RULES.read_text()))
    assert wanted <= exposed, f"rules read metrics busd does not export: {wanted - exposed}"


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    escaped = (
        (k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")) for k, v in labels
    )
    return ",".join(f'{k}="{v}"' for k, v in escaped)


@needs_promtool
@pytest.mark.timeout(60)
def test_a_real_idle_busd_with_the_shipped_assertions_fires_no_alert_for_hours(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """A single-broker install at rest, for real: busd started with the shipped assertions,
    nothing connected, no traffic. Every shipped assertion holds, and its real scrape, held
    for three hours in a promtool test of the shipped rules, fires no alert."""
    busd = busd_factory(extra_args=("--assertions", str(ASSERTIONS)))
    names = set(tomllib.loads(ASSERTIONS.read_text())["assertions"])

    def checked() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        found = scrape(busd.metrics)
        seen = {dict(labels)["name"] for m, labels in found if m == "busd_assertion_ok"}
        return found if seen == names else None

    found = wait_for(checked, timeout=10, what="every shipped assertion checked once")
    violated = [
        dict(labels)["name"]
        for (m, labels), v in found.items()
        if m == "busd_assertion_ok" and v != 1
    ]
    assert violated == [], f"shipped assertions violated at rest: {violated}"
    instance = (("instance", busd.metrics), ("job", "busd"))
    series = [(("up", instance), 1.0)] + [
        ((m, tuple(sorted(labels + instance))), v)
        for (m, labels), v in found.items()
        if m.startswith("busd_") and not math.isnan(v)  # no NaN in a rest state
    ]
    lines = [
        "rule_files:",
        *(f"  - {path}" for path in (RULES, POOL_RULES)),
        "evaluation_interval: 1m",
        "tests:",
        "  - interval: 1m",
        "    input_series:",
    ]
    for (metric, labels), v in series:
        lines += [
            f"      - series: '{metric}{{{_label_text(labels)}}}'",
            f"        values: '{v!r}x180'",
        ]
    lines.append("    alert_rule_test:")
    for at in ("30m", "3h"):
        for alert in alerts_of(RULES, POOL_RULES):
            lines += [
                f"      - eval_time: {at}",
                f"        alertname: {alert}",
                "        exp_alerts: []",
            ]
    generated = tmp_path / "at-rest.test.yml"
    generated.write_text("\n".join(lines) + "\n")
    result = promtool("test", "rules", str(generated), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(series) > 100  # the whole scrape, not a handful of series
