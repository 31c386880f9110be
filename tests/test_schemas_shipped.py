"""The shipped schemas (schemas/): every version's valid and invalid payloads, with the exact
code and reason busd answers; generated payloads; a v1 consumer reading v2 messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from busd_protocol.schemas import SchemaSet

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
pytestmark = pytest.mark.timeout(30)
SHIPPED = SchemaSet.load(SCHEMAS)


@pytest.fixture
def shipped() -> SchemaSet:
    return SHIPPED


def release(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "slug": "https://apps.example/shop/releases/42",
        "cmd": "bin/web",
        "env": {"RACK_ENV": "production"},
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not DROP}


def instance(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "app": "shop",
        "instance_id": "web.3",
        "state": "up",
        "host": "worker-7.dc1.example",
        "version": "42",
        "reported_at": 1_795_791_600_000_000_000,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not DROP}


DROP = object()  # a field to leave out
STATES = ["starting", "up", "crashed", "idle", "down"]

VALID = [
    ("release.shop", "release", 1, release()),
    ("release.shop", "release", 1, release(env={})),
    ("release.x", "release", 1, release(slug="s3://bucket/shop/42.tgz", cmd="x")),
    ("release.shop", "release", 2, release()),
    ("release.shop", "release", 2, release(flag="extra_cpu")),
    ("release.shop", "release", 2, release(env={"_A1": "", "JAVA_OPTS": "-Xmx1g"})),
    ("release.shop", "release", 2, release(slug="https://h.example/a%20b?q=1#f")),
    *[("instance.shop", "instance-state", 1, instance(state=s)) for s in STATES],
    ("instance.shop", "instance-state", 1, instance(reported_at=0, host="localhost")),
    ("instance.shop", "instance-state", 1, instance(reported_at=2**63 - 1, app="a-1")),
]


@pytest.mark.parametrize(("topic", "schema", "version", "data"), VALID)
def test_valid_payloads_are_accepted(
    shipped: SchemaSet, topic: str, schema: str, version: int, data: dict[str, Any]
) -> None:
    """Payloads matching the version they claim pass."""
    assert shipped.check(topic, schema, version, data) is None


INVALID = [
    # (topic, schema, version, data, code, reason)
    (
        "release.shop",
        "release",
        1,
        release(slug=DROP),
        "invalid",
        "data.slug: required field is missing",
    ),
    (
        "release.shop",
        "release",
        1,
        release(cmd=DROP),
        "invalid",
        "data.cmd: required field is missing",
    ),
    (
        "release.shop",
        "release",
        1,
        release(env=DROP),
        "invalid",
        "data.env: required field is missing",
    ),
    (
        "release.shop",
        "release",
        1,
        release(flag="extra_cpu"),
        "invalid",
        "data.flag: field not allowed by release v1",
    ),
    (
        "release.shop",
        "release",
        1,
        release(env={"JAVA_OPTS": 512}),
        "invalid",
        "data.env.JAVA_OPTS: expected string, got int",
    ),
    (
        "release.shop",
        "release",
        2,
        release(env={"JAVA_OPTS": None}),
        "invalid",
        "data.env.JAVA_OPTS: expected string, got nil",
    ),
    (
        "release.shop",
        "release",
        2,
        release(env=["A=1"]),
        "invalid",
        "data.env: expected map, got array",
    ),
    (
        "release.shop",
        "release",
        2,
        release(env={"1A": "x"}),
        "invalid",
        "data.env: key '1A' does not match pattern '^[A-Za-z_][A-Za-z0-9_]*$'",
    ),
    (
        "release.shop",
        "release",
        2,
        release(env={"A B": "x"}),
        "invalid",
        "data.env: key 'A B' does not match pattern '^[A-Za-z_][A-Za-z0-9_]*$'",
    ),
    (
        "release.shop",
        "release",
        2,
        release(slug="not a uri"),
        "invalid",
        "data.slug: expected an absolute URI, got 'not a uri'",
    ),
    (
        "release.shop",
        "release",
        2,
        release(slug="/relative/path"),
        "invalid",
        "data.slug: expected an absolute URI, got '/relative/path'",
    ),
    (
        "release.shop",
        "release",
        2,
        release(slug="https://h/%zz"),
        "invalid",
        "data.slug: expected an absolute URI, got 'https://h/%zz'",
    ),
    (
        "release.shop",
        "release",
        2,
        release(slug=42),
        "invalid",
        "data.slug: expected string, got int",
    ),
    (
        "release.shop",
        "release",
        2,
        release(cmd=""),
        "invalid",
        "data.cmd: expected at least 1 character, got 0",
    ),
    (
        "release.shop",
        "release",
        2,
        release(cmd=b"bin/web"),
        "invalid",
        "data.cmd: expected string, got bytes",
    ),
    (
        "release.shop",
        "release",
        2,
        release(flag=True),
        "invalid",
        "data.flag: expected string, got bool",
    ),
    (
        "release.shop",
        "release",
        2,
        release(flag="x" * 65),
        "invalid",
        "data.flag: expected at most 64 characters, got 65",
    ),
    (
        "release.shop",
        "release",
        2,
        release(flags="extra_cpu"),
        "invalid",
        "data.flags: field not allowed by release v2",
    ),
    (
        "release.shop",
        "release",
        2,
        release(**{"odd key": 1}),
        "invalid",
        "data['odd key']: field not allowed by release v2",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(state="boom"),
        "invalid",
        "data.state: expected one of ['starting', 'up', 'crashed', 'idle', 'down'], got 'boom'",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(state=1),
        "invalid",
        "data.state: expected string, got int",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(app="Shop"),
        "invalid",
        "data.app: 'Shop' does not match pattern '^[a-z0-9][a-z0-9-]*$'",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(instance_id=""),
        "invalid",
        "data.instance_id: expected at least 1 character, got 0",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(host="bad_host!"),
        "invalid",
        "data.host: expected a host name, got 'bad_host!'",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(version=42),
        "invalid",
        "data.version: expected string, got int",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(reported_at=1.5),
        "invalid",
        "data.reported_at: expected int, got float",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(reported_at=True),
        "invalid",
        "data.reported_at: expected int, got bool",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(reported_at=-1),
        "invalid",
        "data.reported_at: expected >= 0, got -1",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(reported_at=2**63),
        "invalid",
        "data.reported_at: expected <= 9223372036854775807, got 9223372036854775808",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(reported_at="2026-05-01T00:00:00Z"),
        "invalid",
        "data.reported_at: expected int, got string",
    ),
    (
        "instance.shop",
        "instance-state",
        1,
        instance(host=DROP),
        "invalid",
        "data.host: required field is missing",
    ),
    # Envelope-level verdicts, in the order busd checks them.
    (
        "release.shop",
        "deploy",
        1,
        release(),
        "unknown_schema",
        "no schema named 'deploy' is loaded",
    ),
    (
        "release.shop",
        "release",
        3,
        release(),
        "unknown_version",
        "release has no version 3 (loaded: 1, 2)",
    ),
    (
        "release.shop",
        "instance-state",
        2,
        instance(),
        "unknown_version",
        "instance-state has no version 2 (loaded: 1)",
    ),
    (
        "instance.shop",
        "release",
        2,
        release(),
        "schema_not_allowed",
        "schema release may not be carried on topic 'instance.shop'; allowed prefixes: 'release.'",
    ),
    (
        "releases",
        "release",
        2,
        release(),
        "schema_not_allowed",
        "schema release may not be carried on topic 'releases'; allowed prefixes: 'release.'",
    ),
    (
        "release.shop",
        "instance-state",
        1,
        instance(),
        "schema_not_allowed",
        "schema instance-state may not be carried on topic 'release.shop'; "
        "allowed prefixes: 'instance.'",
    ),
    (
        "instance.shop",
        "release",
        3,
        release(),
        "unknown_version",
        "release has no version 3 (loaded: 1, 2)",
    ),
]


@pytest.mark.parametrize(("topic", "schema", "version", "data", "code", "reason"), INVALID)
def test_invalid_payloads_get_code_and_reason(
    shipped: SchemaSet,
    topic: str,
    schema: str,
    version: int,
    data: dict[str, Any],
    code: str,
    reason: str,
) -> None:
    """Each refusal names its stable code, and for payloads the failing path and rule."""
    assert shipped.check(topic, schema, version, data) == (code, reason)


def test_shipped_set_lists_versions_status_and_topics(shipped: SchemaSet) -> None:
    """The shipped set is release v1 (deprecated) and v2, and instance-state v1."""
    summary = {
        (i.name, v.version, v.status, i.topics) for i in shipped.describe() for v in i.versions
    }
    assert summary == {
        ("release", 1, "deprecated", ("release.",)),
        ("release", 2, "active", ("release.",)),
        ("instance-state", 1, "active", ("instance.",)),
    }


def test_v1_consumer_reads_v2_messages(shipped: SchemaSet) -> None:
    """A v2 message, decoded by a consumer that knows only v1's fields, yields a valid v1
    value: the extra field is ignored, every field v1 needs is there with v1's type."""
    v2 = release(flag="extra_cpu", env={"JAVA_OPTS": "-Xmx1g"})
    assert shipped.check("release.shop", "release", 2, v2) is None
    wire = msgpack.packb({"schema": "release", "version": 2, "data": v2})
    decoded = msgpack.unpackb(wire)["data"]
    v1_fields = shipped.document("release", 1)["properties"].keys()
    as_v1 = {k: v for k, v in decoded.items() if k in v1_fields}
    assert as_v1 == release(env={"JAVA_OPTS": "-Xmx1g"})
    assert shipped.check("release.shop", "release", 1, as_v1) is None


# Generated payloads: strategies that produce only values the schema allows.
env_names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z")
release_v1 = st.fixed_dictionaries(
    {
        "slug": st.builds(
            lambda host, path: f"https://{host}.example/{path}",
            st.from_regex(r"\A[a-z0-9]{1,12}\Z"),
            st.from_regex(r"\A[a-z0-9/._-]{0,30}\Z"),
        ),
        "cmd": st.text(min_size=1, max_size=50),
        "env": st.dictionaries(env_names, st.text(max_size=30), max_size=5),
    }
)
release_v2 = st.tuples(release_v1, st.none() | st.text(min_size=1, max_size=64)).map(
    lambda pair: pair[0] if pair[1] is None else {**pair[0], "flag": pair[1]}
)
instance_v1 = st.fixed_dictionaries(
    {
        "app": st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,20}\Z"),
        "instance_id": st.text(min_size=1, max_size=128),
        "state": st.sampled_from(STATES),
        "host": st.from_regex(r"\A[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}\Z"),
        "version": st.text(min_size=1, max_size=64),
        "reported_at": st.integers(min_value=0, max_value=2**63 - 1),
    }
)
GENERATED = {
    ("release", 1): release_v1,
    ("release", 2): release_v2,
    ("instance-state", 1): instance_v1,
}
TOPICS = {"release": "release.shop", "instance-state": "instance.shop"}
WRONG_TYPE = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.binary(max_size=3),
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    st.sampled_from(sorted(GENERATED)).flatmap(lambda key: st.tuples(st.just(key), GENERATED[key]))
)
def test_generated_valid_payloads_are_accepted(case: tuple[tuple[str, int], Any]) -> None:
    """Any payload built within a version's rules passes, for every shipped version."""
    (schema, version), data = case
    assert SHIPPED.check(TOPICS[schema], schema, version, data) is None


@FAST
@given(
    st.sampled_from(sorted(GENERATED)).flatmap(lambda key: st.tuples(st.just(key), GENERATED[key])),
    st.data(),
)
def test_mutated_payloads_are_rejected_as_invalid(
    case: tuple[tuple[str, int], Any], draw: st.DataObject
) -> None:
    """Dropping a required field, retyping a field or adding an unknown one is refused with
    `invalid`, and the reason starts with the mutated field's path."""
    (schema, version), data = case
    data = dict(data)
    field = draw.draw(st.sampled_from(sorted(data)))
    mutation = draw.draw(st.sampled_from(["drop", "retype", "extra"]))
    if mutation == "drop":
        if field == "flag":
            mutation = "extra"  # flag is optional: dropping it leaves a valid payload
        else:
            del data[field]
    if mutation == "retype":
        value = data[field]
        data[field] = draw.draw(WRONG_TYPE.filter(lambda v: type(v) is not type(value)))
    if mutation == "extra":
        field = draw.draw(st.from_regex(r"\A[a-z]{1,8}_x\Z"))
        data[field] = "surprise"
    verdict = SHIPPED.check(TOPICS[schema], schema, version, data)
    assert verdict is not None
    assert verdict[0] == "invalid"
    assert verdict[1].startswith(f"data.{field}: "), verdict
