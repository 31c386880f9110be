"""The assertion expression language and assertions files (pure kernel, no busd process)."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from busd.ops.assertion_rules import (
    AssertionConfigError,
    ExpressionError,
    evaluate,
    names,
    parse,
    parse_file,
    parse_window,
)
from busd.ops.figures import FIGURES, Figures, compute, sample
from busd.statistics import BrokerStatistics, ConnectionStatistics, Statistics
from busd_protocol.codes import Code
from busd_protocol.histogram import Histogram

FIG = {
    "p99_latency_ms": 12.0,
    "publishers_connected": 2.0,
    "reject_ratio": 0.02,
    "accept_rate": 90.0,
    "receive_rate": 100.0,
    "zero": 0.0,
}
VALUES = SimpleNamespace(**FIG)  # expressions read figures as attributes


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("p99_latency_ms < 50", True),
        ("p99_latency_ms < 12", False),
        ("p99_latency_ms <= 12", True),
        ("publishers_connected >= 1", True),
        ("publishers_connected == 2", True),
        ("publishers_connected != 2", False),
        ("reject_ratio < 0.01", False),
        ("reject_ratio < 0.01 or publishers_connected > 1", True),
        ("p99_latency_ms < 50 and reject_ratio < 0.01", False),
        ("not reject_ratio < 0.01", True),
        ("not (p99_latency_ms < 50 and publishers_connected >= 1)", False),
        ("accept_rate >= 0.9 * receive_rate", True),
        ("accept_rate / receive_rate > 0.95", False),
        ("(accept_rate + 10) / receive_rate == 1", True),
        ("-publishers_connected < 0", True),
        ("1e2 == receive_rate", True),
        (".5 < 1", True),
        ("zero == 0", True),
        ("p99_latency_ms < 50 and publishers_connected >= 1 or zero > 1", True),
        ("zero > 1 or p99_latency_ms < 50 and publishers_connected >= 3", False),
    ],
)
def test_expressions_evaluate_like_their_arithmetic(source: str, expected: bool) -> None:
    """Comparisons, and/or/not with the usual precedence, and + - * / on figures."""
    assert evaluate(parse(source, FIG), VALUES) is expected


def test_division_by_zero_makes_every_comparison_false_so_the_assertion_is_violated() -> None:
    """x / 0 is NaN: both `< 1` and `>= 1` are false (an alarm, never a silent pass)."""
    assert evaluate(parse("accept_rate / zero < 1"), VALUES) is False
    assert evaluate(parse("accept_rate / zero >= 1"), VALUES) is False


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty expression"),
        ("p99_latency_ms", "expected a comparison"),
        ("p99_latency_ms < ", "expected a number or a figure name"),
        ("p99_latency_ms < 50 and", "expected a number or a figure name"),
        ("0 < zero < 5", "chained comparison"),
        ("p99_latency_ms < 50)", "expected 'and', 'or' or the end"),
        ("(p99_latency_ms < 50", "expected ')'"),
        ("p99_latency_ms < 50; import os", "unexpected character ';'"),
        ("__import__('os') == 1", "unexpected character"),
        ("p99_latency_ms << 50", "expected a number or a figure name"),
        ("nope < 1", "unknown figure 'nope'"),
        ("p99_latency_ms < 5 0", "expected 'and', 'or' or the end"),
        ("(" * 40 + "zero < 1" + ")" * 40, "nested more than"),
    ],
)
def test_bad_expressions_are_refused_with_a_message_saying_where(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(source, FIG)


def test_a_long_expression_is_refused() -> None:
    with pytest.raises(ExpressionError, match="over 1000 characters"):
        parse("zero < 1 or " * 100 + "zero < 1")


def test_names_lists_every_figure_an_expression_reads() -> None:
    tree = parse("not (p99_latency_ms < 50) or accept_rate / receive_rate > -zero")
    assert names(tree) == {"p99_latency_ms", "accept_rate", "receive_rate", "zero"}


@given(st.text(max_size=60))
def test_any_text_either_parses_or_raises_expression_error(text: str) -> None:
    """Arbitrary input never crashes the parser with anything but ExpressionError."""
    try:
        tree = parse(text, FIG)
    except ExpressionError:
        return
    assert isinstance(evaluate(tree, VALUES), bool)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0), (" 1.5s ", 1.5)],
)
def test_windows_are_durations_with_a_unit(text: str, seconds: float) -> None:
    assert parse_window(text) == seconds


def test_an_assertions_file_parses_into_checked_assertions() -> None:
    data = tomllib.loads("""
[assertions.latency]
expr = "p99_latency_ms < 50"
window = "60s"
critical = true
description = "broker latency"

[assertions.publishers]
expr = "publishers_connected >= 1"
window_seconds = 5
""")
    first, second = parse_file(data, FIGURES)
    assert (first.name, first.window, first.critical) == ("latency", 60.0, True)
    assert (second.name, second.window, second.critical) == ("publishers", 5.0, False)
    assert first.holds(Figures(**{**dict.fromkeys(FIGURES, 0.0), "p99_latency_ms": 49.0}))
    assert not first.holds(Figures(**{**dict.fromkeys(FIGURES, 0.0), "p99_latency_ms": 50.0}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[other]\nx = 1", "unknown top-level key"),
        ('[assertions.a]\nwindow = "5s"', "assertions.a.expr: expected a string"),
        ('[assertions.a]\nexpr = "bogus > 1"', "assertions.a.expr: column 1: unknown figure"),
        ('[assertions.a]\nexpr = "received > 1"\nwindow = "5 parsecs"', "assertions.a.window"),
        ('[assertions.a]\nexpr = "received > 1"\nwindow = "2h"', "between 1s and 3600s"),
        ('[assertions.a]\nexpr = "received > 1"\nwindow_seconds = 0.1', "between 1s and 3600s"),
        ('[assertions.a]\nexpr = "received > 1"\nwindow = "5s"\nwindow_seconds = 5', "not both"),
        ('[assertions.a]\nexpr = "received > 1"\ncritical = "yes"', "expected true or false"),
        ('[assertions.a]\nexpr = "received > 1"\ncrtical = true', "unknown key"),
        ('[assertions."a b"]\nexpr = "received > 1"', "a name is 1-64 characters"),
        ("assertions = 3", "expected tables"),
    ],
)
def test_bad_assertions_files_are_refused_naming_table_and_key(text: str, message: str) -> None:
    with pytest.raises(AssertionConfigError, match=message):
        parse_file(tomllib.loads(text), FIGURES)


def _stats(
    received: int, accepted: int, rejected: dict[Code, int], latency: Histogram, publishers: int = 0
) -> Statistics:
    def connections(connected: int, handshake_failures: int) -> ConnectionStatistics:
        return ConnectionStatistics(connected, connected, 0, connected, handshake_failures)

    broker = BrokerStatistics(
        received=received,
        accepted=accepted,
        bytes_in=received * 100,
        bytes_accepted=accepted * 100,
        rejected=rejected,
        replies_sent=received,
        replies_dropped=0,
        subscriptions=3,
        subscribe_total=3,
        unsubscribe_total=0,
        batches=received,
        latency=latency.snapshot(),
    )
    return Statistics(
        broker, connections(publishers, 1), connections(4, 0), {"monitor.ingress": 0}, False
    )


def test_figures_are_rates_ratios_and_quantiles_over_the_window_between_two_samples() -> None:
    hist = Histogram()
    hist.observe(0.0002, 50)
    before = sample(_stats(50, 50, {Code.INVALID: 0, Code.RATE_LIMITED: 0}, hist), at=100.0)
    hist.observe(0.03, 99)  # 25 ms < x <= 50 ms bucket
    hist.observe(2.0, 1)
    after = sample(
        _stats(250, 100 + 50, {Code.INVALID: 60, Code.RATE_LIMITED: 40}, hist, publishers=2),
        at=110.0,
    )
    figures = compute(after, before)
    assert set(dataclasses.asdict(figures)) == set(FIGURES)
    assert figures.receive_rate == 20.0
    assert figures.accept_rate == 10.0
    assert figures.reject_ratio == 0.5
    assert figures.throttle_ratio == 0.2
    assert figures.schema_reject_ratio == 0.3
    assert figures.p50_latency_ms == 50.0  # the window excludes the 0.2 ms observations
    assert figures.p99_latency_ms == 50.0
    assert figures.p999_latency_ms == 2500.0
    assert figures.publishers_connected == 2.0
    assert figures.subscribers_connected == 4.0
    assert figures.subscriptions == 3.0
    assert figures.window_seconds == 10.0
    assert math.isclose(figures.bytes_in_rate, 2000.0)


def test_an_empty_window_has_zero_rates_and_zero_latency() -> None:
    hist = Histogram()
    hist.observe(0.5, 10)
    one = sample(_stats(10, 10, {}, hist), at=5.0)
    figures = compute(one, one)
    assert figures.receive_rate == 0.0
    assert figures.reject_ratio == 0.0
    assert figures.p99_latency_ms == 0.0
