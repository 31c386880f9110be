"""Optional local validation gives the publisher busd's own verdict before sending."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import REPO, BusdProcess

from busd_client import AsyncPublisher, Publisher, Rejected

GOOD = {
    "slug": "https://apps.example/shop/releases/42",
    "cmd": "bin/web",
    "env": {"RACK_ENV": "production"},
    "flag": "extra_cpu",
}

BAD: list[tuple[str, str, int, dict[str, Any]]] = [
    ("release.shop", "release", 2, {**GOOD, "env": {"JAVA_OPTS": 1}}),
    ("release.shop", "release", 2, {"cmd": "x", "env": {}}),
    ("release.shop", "release", 9, GOOD),
    ("release.shop", "nosuch", 1, GOOD),
    ("instance.web", "release", 2, GOOD),
]


def _busd_verdict(
    busd: BusdProcess, topic: str, schema: str, version: int, data: dict[str, Any]
) -> tuple[str, str]:
    with Publisher(busd.pub_endpoint, name="remote") as pub, pytest.raises(Rejected) as info:
        pub.publish_wait(topic, schema, version, data)
    return info.value.code, info.value.reason


@pytest.mark.timeout(30)
def test_local_validation_refuses_with_the_code_and_reason_busd_would_give(
    busd: BusdProcess,
) -> None:
    """Each bad payload raises locally exactly what busd answers for it, and is not sent."""
    with Publisher(busd.pub_endpoint, name="local", schemas=REPO / "schemas") as pub:
        for topic, schema, version, data in BAD:
            with pytest.raises(Rejected) as info:
                pub.publish(topic, schema, version, data)
            assert info.value.extra == {"local": True}
            assert (info.value.code, info.value.reason) == _busd_verdict(
                busd, topic, schema, version, data
            )
        pub.publish_wait("release.shop", "release", 2, GOOD)
        assert pub.flush(5) == []


@pytest.mark.timeout(30)
async def test_async_publisher_validates_locally_too(busd: BusdProcess) -> None:
    pub = AsyncPublisher(busd.pub_endpoint, name="local", schemas=str(REPO / "schemas"))
    try:
        with pytest.raises(Rejected) as info:
            await pub.publish("release.shop", "release", 2, {**GOOD, "cmd": 7})
        assert (info.value.code, info.value.reason) == (
            "invalid",
            "data.cmd: expected string, got int",
        )
        await (await pub.publish("release.shop", "release", 2, GOOD)).result()
    finally:
        await pub.close()


def test_local_validation_is_off_by_default() -> None:
    """Without ``schemas`` a publisher checks nothing itself."""
    pub = Publisher("tcp://127.0.0.1:1", name="x", timeout=0.2)
    try:
        assert pub.schemas is None
    finally:
        pub.close(0.1)
