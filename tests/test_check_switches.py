"""Operators can switch the payload and rate checks off; envelope checks always stay on."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest
from conftest import BusdProcess, TrackedContext, wait_for
from rawproto import collect, dealer, envelope, publish


@pytest.mark.timeout(30)
def test_with_schema_checks_off_an_invalid_payload_is_accepted_but_a_bad_envelope_is_not(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    busd = busd_factory(extra_args=("--schema-checks", "off"))
    busd.wait_log("schema checks are off: payloads are not checked")
    pub = dealer(zctx, busd.pub_endpoint)
    publish(pub, 1, "release.shop", envelope("release.shop", data={"cmd": 1}))
    publish(pub, 2, "release.shop", envelope("release.shop", schema="nosuch"))
    publish(pub, 3, "release.shop", msgpack.packb({"topic": "release.shop"}))
    fates = collect(pub, 3)
    assert [fates[s]["code"] for s in (1, 2, 3)] == ["accepted", "accepted", "bad_envelope"]
    pub.close()


@pytest.mark.timeout(30)
def test_with_rate_checks_off_a_disabled_key_does_not_stop_publishing(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    busd = busd_factory(start=False, extra_args=("--rate-checks", "off"))
    (busd.rates_dir / "publish").write_text("0\n")
    busd.start()
    pub = dealer(zctx, busd.pub_endpoint)
    publish(pub, 1)
    publish(pub, 2, "release.shop", envelope("release.shop", data={"cmd": 1}))
    fates = collect(pub, 2)
    assert (fates[1]["code"], fates[2]["code"]) == ("accepted", "invalid")
    pub.close()


@pytest.mark.timeout(30)
def test_by_default_both_checks_are_on(busd: BusdProcess, zctx: TrackedContext) -> None:
    (busd.rates_dir / "publisher.blocked").write_text("0\n")
    pub = dealer(zctx, busd.pub_endpoint)
    publish(pub, 1, "release.shop", envelope("release.shop", data={"cmd": 1}))
    assert collect(pub, 1)[1]["code"] == "invalid"
    seq = [1]

    def refused() -> bool:  # the file applies within a second
        seq[0] += 1
        publish(pub, seq[0], "release.shop", envelope("release.shop", publisher="blocked"))
        return bool(collect(pub, 1)[seq[0]]["code"] == "disabled")

    wait_for(refused, timeout=5, interval=0.05, what="publisher.blocked disabled")
    pub.close()
