"""The rate file grammar: `RATE` or `RATE BURST`, ASCII decimal only, checked on the bytes."""

from __future__ import annotations

import pytest

from busd.control.rates_dir import (
    EmptyRateFile,
    RateFileError,
    decimal_text,
    parse_rate,
    rate_file_text,
)
from busd_protocol.rates import Limit

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("data", "limit"),
    [
        (b"500", Limit(500, 500)),
        (b"500\n", Limit(500, 500)),
        (b"0\n", Limit(0, 1)),
        (b"0.5", Limit(0.5, 1)),
        (b"1000 100\n", Limit(1000, 100)),
        (b"5\t7 \n", Limit(5, 7)),
        (b"0 5", Limit(0, 5)),
        (b"007", Limit(7, 7)),
        (b"2.50 1.5", Limit(2.5, 1.5)),
    ],
)
def test_good_content_parses(data: bytes, limit: Limit) -> None:
    assert parse_rate(data) == limit


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        b"-5",
        b"+5",
        b"nan",
        b"NaN",
        b"inf",
        b"Infinity",
        b"1_000",
        b"1,000",
        b"1e3",
        b"1E3",
        b"0x10",
        b"5.",
        b".5",
        b" 5",
        b"5\n\n",
        b"5\r\n",
        b"5 1 2",
        b"5 -1",
        b"\n",
        b"5\x00",
        "\u0665".encode(),
        "\uff15".encode(),
        "5\u00a0".encode(),
        b"1 0",
        b"1 0.5",
        b"2000000000",
        b"9" * 300,
        b"5" + b" " * 300,
    ],
)
def test_bad_content_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(RateFileError) as caught:
        parse_rate(data)
    assert not isinstance(caught.value, EmptyRateFile)
    assert str(caught.value)


def test_empty_content_is_not_yet_written() -> None:
    with pytest.raises(EmptyRateFile, match="empty"):
        parse_rate(b"")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (500, "500"),
        (0, "0"),
        (0.5, "0.5"),
        (2.0, "2.0"),
        (1e-7, "0.0000001"),
        (1e6, "1000000.0"),
        ("250", "250"),
        ("0.25", "0.25"),
    ],
)
def test_numbers_from_the_socket_become_grammar_text(value: object, text: str) -> None:
    assert decimal_text(value, "rate") == text


@pytest.mark.parametrize(
    "value", [-1, -0.5, float("nan"), float("inf"), True, None, "1e3", "-5", " 5", [5], "\u0665"]
)
def test_values_outside_the_grammar_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        decimal_text(value, "rate")


def test_rate_file_text_round_trips_through_the_parser() -> None:
    assert rate_file_text(1000, 100) == ("1000 100\n", Limit(1000, 100))
    assert rate_file_text(0) == ("0\n", Limit(0, 1))
    with pytest.raises(ValueError, match="burst"):
        rate_file_text(10, 0)
    with pytest.raises(ValueError, match="rate"):
        rate_file_text(10**12)
