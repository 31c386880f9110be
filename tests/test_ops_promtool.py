"""The shipped Prometheus rules: promtool checks and unit tests, and consistency with busd's
real metrics and with the shipped assertions file."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Callable

import pytest
from conftest import REPO, BusdProcess
from opshttp import PROMTOOL, get, needs_promtool, scrape_text

PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "busd-rules.yml"
RULE_TESTS = PROM / "busd-rules.test.yml"
ASSERTIONS = REPO / "deploy" / "assertions.toml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
@pytest.mark.timeout(60)
def test_promtool_check_rules_accepts_the_shipped_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
@pytest.mark.timeout(60)
def test_promtool_test_rules_passes_the_shipped_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_case_where_it_fires() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE))
    assert len(alerts) >= 10
    # A case "fires" when its exp_alerts list is not empty.
    cases = re.findall(r"alertname: (\w+)\n\s*exp_alerts:(\s*\[\])?", RULE_TESTS.read_text())
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    assert alerts == firing, f"alerts without a firing case: {alerts - firing}"
    assert alerts == quiet, f"alerts without a quiet case: {alerts - quiet}"


def test_every_shipped_assertion_has_a_matching_alert() -> None:
    """Each assertion of deploy/assertions.toml but the readiness gate is mirrored by an
    alert annotated `# assertion: <expr>`; busd_assertion_ok covers the rest."""
    mirrored = set(re.findall(r"# assertion: (.+)$", RULES.read_text(), re.MULTILINE))
    shipped = tomllib.loads(ASSERTIONS.read_text())["assertions"]
    exprs = {table["expr"] for name, table in shipped.items() if not table.get("critical")}
    assert exprs == mirrored


@pytest.mark.timeout(30)
def test_every_metric_the_rules_read_is_in_a_real_scrape_of_busd_with_the_shipped_assertions(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(extra_args=("--assertions", str(ASSERTIONS)), start=False)
    (busd.rates_dir / "publish").write_text("500\n")  # per-key families need a key
    busd.start()
    assert get(busd.metrics, "/readyz")[0] == 200  # the shipped critical assertion holds
    exposed = set(re.findall(r"^(busd_\w+?)(?:\{| )", scrape_text(busd.metrics), re.MULTILINE))
    wanted = set(re.findall(r"\b(busd_[a-z_]+)", RULES.read_text()))
    assert wanted <= exposed, f"rules read metrics busd does not export: {wanted - exposed}"
