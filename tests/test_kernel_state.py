"""The state cache's key functions (busd/kernel/state.py): generated per rule for checked
payloads, generic when schema checks are off."""

from __future__ import annotations

from typing import Any

import pytest

from busd.kernel.state import StateCache, keyer
from busd_protocol.schemas.state import parse_state

RULE = parse_state(
    {"key": ["app", "instance_id"], "ttl_s": 600, "ends": {"field": "state", "values": ["down", 0]}}
)


def data(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"app": "shop", "instance_id": "a", "state": "up"}
    base.update(overrides)
    return base


@pytest.mark.parametrize("checked", [True, False])
def test_the_key_is_the_schema_and_the_key_fields_values_in_declared_order(checked: bool) -> None:
    key_of = keyer("instance-state", RULE, checked)
    assert key_of(data(), 10.0) == (("instance-state", "shop", "a"), False, 610.0)


@pytest.mark.parametrize("fields", [["a"], ["a", "b", "c", "d"]])
def test_keys_of_one_to_four_fields_and_no_ttl_never_expire(fields: list[str]) -> None:
    key_of = keyer("s", parse_state({"key": fields}), True)
    payload = {name: i for i, name in enumerate(fields)}
    assert key_of(payload, 5.0) == (("s", *range(len(fields))), False, float("inf"))


@pytest.mark.parametrize("checked", [True, False])
@pytest.mark.parametrize(
    ("value", "ends"),
    [
        ("down", True),
        (0, True),
        ("up", False),
        (None, False),
        (0.0, False),
        (False, False),
        (["down"], False),
        ({"down": 1}, False),
    ],
)
def test_only_a_declared_string_or_integer_value_ends_the_entry(
    checked: bool, value: Any, ends: bool
) -> None:
    """1.0 equals 1 and False equals 0 in Python, but neither is a declared value; an
    unhashable value (a list, a map) ends nothing rather than raising."""
    key_of = keyer("instance-state", RULE, checked)
    got = key_of(data(state=value), 1.0)
    assert got is not None and got[1] is ends


def test_messages_of_one_clock_reading_share_one_expiry_and_a_new_reading_moves_it() -> None:
    key_of = keyer("instance-state", RULE, True)
    now = 100.0 + 0.5
    first, second = key_of(data(), now), key_of(data(instance_id="b"), now)
    assert first is not None and second is not None
    assert first[2] == 700.5 and first[2] is second[2]
    later = key_of(data(), now + 1)
    assert later is not None and later[2] == 701.5


def test_without_schema_checks_a_payload_without_a_usable_key_is_not_held() -> None:
    key_of = keyer("instance-state", RULE, False)
    assert key_of({"app": "shop"}, 1.0) is None
    assert key_of(data(instance_id=1.5), 1.0) is None
    assert key_of(data(instance_id=7), 1.0) == (("instance-state", "shop", 7), False, 601.0)


def test_record_holds_the_latest_per_key_in_update_order_and_an_end_removes_it() -> None:
    key_of = keyer("instance-state", RULE, True)
    cache = StateCache(10, 1 << 20)
    for i, name in enumerate(["a", "b", "a"]):
        state_key = key_of(data(instance_id=name), 1.0)
        assert state_key is not None
        cache.record(state_key, b"instance.shop", b"env-%d" % i, 1, i + 1)
    assert [e[1] for e in cache.cut()] == [b"env-1", b"env-2"]
    assert cache.bytes == 2 * (len(b"instance.shop") + 5)
    ended = key_of(data(instance_id="b", state="down"), 2.0)
    assert ended is not None
    cache.record(ended, b"instance.shop", b"env-3", 1, 4)
    assert [e[1] for e in cache.cut()] == [b"env-2"] and cache.ended == 1


def test_an_update_keeps_the_key_and_topic_objects_already_held() -> None:
    """Only the envelope, stamp and expiry change: the new message's equal key and topic
    are freed at once (cheaper than freeing the held ones, docs/performance.md "State")."""
    key_of = keyer("instance-state", RULE, True)
    cache = StateCache(10, 1 << 20)
    first_key, second_key = key_of(data(), 1.0), key_of(data(), 2.0)
    assert first_key is not None and second_key is not None
    first_topic, second_topic = (
        bytes(bytearray(b"instance.shop")),
        bytes(bytearray(b"instance.shop")),
    )
    cache.record(first_key, first_topic, b"env-1", 1, 1)
    cache.record(second_key, second_topic, b"env-2", 1, 2)
    [(held_key, entry)] = cache.entries.items()
    assert held_key is first_key[0] and entry[5] is first_key[0] and entry[0] is first_topic
    assert entry[1:5] == (b"env-2", 1, 2, 602.0)
    cache.record(key_of(data(), 3.0) or first_key, b"instance.other", b"env-3", 1, 3)
    assert cache.cut()[0][0] == b"instance.other"
    assert cache.bytes == len(b"instance.other") + 5
