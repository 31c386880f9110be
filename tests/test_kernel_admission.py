"""The pure kernel: envelope and topic checks, admission order, and the wire codec."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from conftest import decide
from hypothesis import given
from hypothesis import strategies as st

from busd.kernel.admission import Admission
from busd_protocol import envelope as rules
from busd_protocol.codes import Code, Reject
from busd_protocol.envelope import check_envelope, check_topic, explain_envelope
from busd_protocol.frames import read_header
from busd_protocol.histogram import Histogram
from busd_protocol.messages import decode_envelope
from busd_protocol.replies import encode_reply, reject_entry


def env(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "topic": "release.shop",
        "schema": "release",
        "version": 1,
        "id": "m1",
        "publisher": "deployer",
        "ts": 1,
        "data": {},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("topic", "ok"),
    [
        ("release.shop", True),
        ("r", True),
        ("é.ü", True),
        ("a" * 255, True),
        ("", False),
        ("a" * 256, False),
        ("é" * 128, False),
        ("a b", False),
        ("a\tb", False),
        ("a\x00", False),
        ("a\x7f", False),
        ("a\nb", False),
    ],
)
def test_topic_rules(topic: str, ok: bool) -> None:
    """Topics are 1-255 UTF-8 bytes with no control characters or spaces."""
    result = check_topic(topic)
    assert (result is None) == ok
    if not ok:
        assert result is not None and result.code == Code.BAD_TOPIC


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"schema": 3}, "envelope.schema: expected string, got int"),
        ({"schema": "Release"}, "envelope.schema: expected 1-64 chars"),
        ({"version": True}, "envelope.version: expected int, got bool"),
        ({"version": -1}, "envelope.version: expected an int >= 1"),
        ({"id": "x" * 129}, "envelope.id: expected 1-128 chars"),
        ({"publisher": ""}, "envelope.publisher: expected 1-128 chars"),
        ({"ts": -5}, "envelope.ts: expected an int >= 0"),
        ({"ts": None}, "envelope.ts: expected int, got nil"),
        ({"data": "x"}, "envelope.data: expected map, got string"),
        ({"topic": b"release.shop"}, "envelope.topic: expected string, got bin"),
    ],
)
def test_envelope_field_errors_name_the_field_and_rule(
    overrides: dict[str, Any], reason: str
) -> None:
    """A wrong field is ``bad_envelope`` with a reason naming the field and the rule."""
    result = check_envelope("release.shop", env(**overrides))
    assert result is not None
    assert result.code == Code.BAD_ENVELOPE
    assert result.reason.startswith(reason)


@pytest.mark.parametrize("field", ["topic", "schema", "version", "id", "publisher", "ts", "data"])
def test_every_required_field_is_checked(field: str) -> None:
    """Each of the seven envelope fields is required."""
    e = env()
    del e[field]
    result = check_envelope("release.shop", e)
    assert result == Reject(Code.BAD_ENVELOPE, f"envelope.{field}: required field is missing")


def test_unknown_envelope_keys_are_passed_through() -> None:
    """Extra keys are for forward compatibility: they are not an error."""
    assert check_envelope("release.shop", env(trace="abc")) is None


class _Refuse:
    def __init__(self, code: Code) -> None:
        self.code = code
        self.calls = 0

    def admit(self, topic: str, publisher: str, now: float) -> Reject | None:
        self.calls += 1
        return Reject(self.code, "no")

    def check(
        self, topic: str, schema: str, version: int, data: dict[str, Any], publisher: str = ""
    ) -> Reject | None:
        self.calls += 1
        return Reject(self.code, "no")


def test_admission_checks_rates_before_schemas_and_envelope_before_both() -> None:
    """A flood costs little: a refused rate never reaches the schema check."""
    rates, schemas = _Refuse(Code.RATE_LIMITED), _Refuse(Code.INVALID)
    admission = Admission(rates, schemas)
    result = decide(admission, "release.shop", env(), now=0.0)
    assert result is not None and result.code == Code.RATE_LIMITED
    assert (rates.calls, schemas.calls) == (1, 0)
    result = decide(admission, "release.shop", env(version="x"), now=0.0)
    assert result is not None and result.code == Code.BAD_ENVELOPE
    assert (rates.calls, schemas.calls) == (1, 0)
    admission.install_rates(None)
    result = decide(admission, "release.shop", env(), now=0.0)
    assert result is not None and result.code == Code.INVALID


def test_admission_with_no_policies_accepts_a_well_formed_envelope() -> None:
    assert decide(Admission(), "release.shop", env(), now=0.0) is None


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b"B\x01" + (7).to_bytes(8, "big"), 7),
        (b"B\x01" + b"\xff" * 8, 2**64 - 1),
        (b"B\x02" + (7).to_bytes(8, "big"), Code.UNSUPPORTED_PROTOCOL),
        (b"B\x02", Code.UNSUPPORTED_PROTOCOL),
        (b"B\x01", Code.BAD_FRAME),
        (b"", Code.BAD_FRAME),
        (b"C\x01" + (7).to_bytes(8, "big"), Code.BAD_FRAME),
    ],
)
def test_header_frames(frame: bytes, expected: int | Code) -> None:
    seq, reject = read_header(frame)
    if isinstance(expected, Code):
        assert isinstance(reject, Reject) and reject.code == expected
    else:
        assert reject is None and seq == expected


# Words of the decoder, not of the protocol: no reason may carry them.
_PYTHON_WORDS = (
    "unpack",
    "Unpack",
    "codec",
    "strict_map_key",
    "NoneType",
    "Error",
    "got bytes",
    "dict",
)


@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_never_raises(data: bytes) -> None:
    """Any bytes decode to a map or to ``bad_encoding``, whose reason is in the protocol's
    terms; nothing escapes."""
    result = decode_envelope(data)
    if not isinstance(result, dict):
        assert result.code == Code.BAD_ENCODING
        assert not any(word in result.reason for word in _PYTHON_WORDS), result.reason


_GOOD = msgpack.packb(env())


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_GOOD + b"\x00\x00", "envelope continues past its msgpack object (2 trailing bytes)"),
        (_GOOD[:-2], "envelope is truncated: its msgpack object is incomplete"),
        (b"", "envelope is truncated: its msgpack object is incomplete"),
        (b"\xc1", "not msgpack: a byte that starts no msgpack type"),
        (b"\x81\xa1a\xa2\xff\xfe", "a msgpack str is not valid UTF-8"),
        (msgpack.packb({1: 2}), "a map key is a msgpack int; keys must be str (or bin)"),
        (b"\x81\xc0\x01", "a map key is a msgpack nil; keys must be str (or bin)"),
        (b"\x81\x91\x01\x01", "a map key is a msgpack array; keys must be str (or bin)"),
        (
            msgpack.packb({"data": {2.5: 1}}),
            "a map key is a msgpack float; keys must be str (or bin)",
        ),
        (msgpack.packb({"x": msgpack.ExtType(5, b"x")}), "msgpack ext types are not allowed"),
        (msgpack.packb({"x": msgpack.ExtType(5, b"")}), "msgpack ext types are not allowed"),
        (b"\x81\xa1x\xd4\xff\x00", "msgpack ext types are not allowed"),
        (b"\x91" * 3000 + b"\x01", "msgpack nested too deeply"),
        (msgpack.packb([1]), "envelope is not a msgpack map"),
    ],
)
def test_bad_encodings_are_explained_in_the_protocols_terms(frame: bytes, reason: str) -> None:
    """Every way an envelope frame fails to be one strict msgpack map has its own reason."""
    result = decode_envelope(frame)
    assert isinstance(result, Reject)
    assert (result.code, result.reason) == (Code.BAD_ENCODING, reason)


@pytest.mark.parametrize(
    "value",
    [
        msgpack.Timestamp(1, 2),
        msgpack.Timestamp(2**35, 0),  # the 96-bit encoding
        [msgpack.Timestamp(0, 5)],
        {"deep": {"er": [1, msgpack.Timestamp(3, 0)]}},
    ],
)
def test_the_timestamp_extension_is_refused_like_every_ext_type(value: Any) -> None:
    """msgpack decodes ext type -1 by itself; busd refuses it all the same, at any depth."""
    result = decode_envelope(msgpack.packb({**env(), "x": value}))
    assert isinstance(result, Reject)
    assert result.reason == "msgpack ext types are not allowed"


def test_a_bin_map_key_is_kept_as_an_unknown_key() -> None:
    """A bin key can never be one of the seven fields: it is passed through, not refused."""
    result = decode_envelope(msgpack.packb({**env(), b"topic": 1}, use_bin_type=True))
    assert isinstance(result, dict) and result[b"topic"] == 1


@given(
    st.dictionaries(
        st.text(max_size=8), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8), max_size=6
    )
)
def test_string_keyed_maps_round_trip(value: dict[str, Any]) -> None:
    assert decode_envelope(msgpack.packb(value)) == value


def test_reply_frames_carry_ranges_and_rejections() -> None:
    entry = reject_entry(
        9, Reject(Code.RATE_LIMITED, "slow down", {"key": "publish", "retry_after_ms": 12})
    )
    reply = msgpack.unpackb(encode_reply([1, 8, 10, 10], [entry]))
    assert reply == {
        "acc": [[1, 8], [10, 10]],
        "rej": [
            {
                "seq": 9,
                "code": "rate_limited",
                "reason": "slow down",
                "key": "publish",
                "retry_after_ms": 12,
            }
        ],
    }


def test_histogram_quantiles_are_bucket_upper_bounds() -> None:
    h = Histogram((0.001, 0.01, 0.1))
    h.observe(0.0005, 98)
    h.observe(0.05, 2)
    snap = h.snapshot()
    assert (snap.total, snap.quantile(0.5), snap.quantile(0.99)) == (100, 0.001, 0.1)
    h.observe(5.0)
    assert h.snapshot().minus(snap).quantile(1.0) == float("inf")


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.text(max_size=4),
    st.sampled_from(["release.shop", "release", "deployer", "a b", ""]),
    st.binary(max_size=3),
    st.dictionaries(st.text(max_size=2), st.none(), max_size=2),
)


@given(
    st.dictionaries(
        st.sampled_from(["topic", "schema", "version", "id", "publisher", "ts", "data", "extra"]),
        _values,
    ),
    st.booleans(),
)
def test_the_fast_envelope_check_agrees_with_the_explained_one(
    partial: dict[str, Any], complete: bool
) -> None:
    """The one-expression fast path accepts exactly what the field-by-field rules accept."""
    e = {**env(), **partial} if complete else partial
    assert (check_envelope("release.shop", e) is None) == (
        explain_envelope("release.shop", e) is None
    )
    if check_envelope("release.shop", e) is not None:
        assert check_envelope("release.shop", e) == explain_envelope("release.shop", e)


def test_names_remembered_as_good_never_let_a_bad_name_pass_and_stay_bounded() -> None:
    """check_envelope remembers schema and publisher names that passed their rules: a name
    good for one rule is still judged by the other (``Release`` is a fine publisher, not a
    schema), and past ``GOOD_NAMES_MAX`` names the memory starts again."""
    good = {
        "topic": "t",
        "schema": "release",
        "version": 1,
        "id": "i",
        "publisher": "Release",
        "ts": 0,
        "data": {},
    }
    assert rules.check_envelope("t", good) is None
    swapped = dict(good, schema="Release", publisher="release")
    reject = rules.check_envelope("t", swapped)
    assert reject is not None and reject.reason.startswith("envelope.schema:")
    for i in range(rules.GOOD_NAMES_MAX + 10):
        assert rules.check_envelope("t", dict(good, publisher=f"p{i}")) is None
    assert len(rules._GOOD_PUBLISHERS) <= rules.GOOD_NAMES_MAX
    assert len(rules._GOOD_SCHEMAS) <= rules.GOOD_NAMES_MAX
