"""Warm-up: a freshly started busd answers publishes with not_ready until subscribers are back."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import rawproto
from conftest import BusdProcess, TrackedContext, wait_for
from opshttp import get, scrape

import busd_client

pytestmark = pytest.mark.timeout(30)
RELEASE = {"slug": "https://apps.example/shop/releases/1", "cmd": "bin/web", "env": {}}


def test_publishes_during_warmup_are_refused_with_not_ready_and_retry_after(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    """Every publish in the warm-up gets not_ready with retry_after_ms; later ones pass."""
    b = busd_factory(extra_args=("--warmup", "1.5"))
    sock = rawproto.dealer(zctx, b.pub_endpoint)
    rawproto.publish(sock, 1)
    fate = rawproto.collect(sock, 1)[1]
    assert fate["code"] == "not_ready"
    assert 0 < fate["retry_after_ms"] <= 1500
    assert "warming up" in fate["reason"]
    status, _, body = get(b.metrics, "/readyz")
    assert status == 503 and b"warming up" in body

    seq = 1

    def accepted() -> bool:
        nonlocal seq
        seq += 1
        rawproto.publish(sock, seq)
        return bool(rawproto.collect(sock, 1)[seq]["code"] == "accepted")

    wait_for(accepted, timeout=5, interval=0.05, what="the warm-up to end")
    assert get(b.metrics, "/readyz")[0] == 200
    counted = scrape(b.metrics)
    refused = [
        v
        for (name, labels), v in counted.items()
        if name == "busd_messages_rejected_total" and ("code", "not_ready") in labels
    ]
    assert refused and refused[0] >= 1
    sock.close()


def test_warmup_zero_accepts_at_once(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    """With --warmup 0 the first publish is accepted and /readyz is 200 at start."""
    b = busd_factory(extra_args=("--warmup", "0"))
    assert get(b.metrics, "/readyz")[0] == 200
    sock = rawproto.dealer(zctx, b.pub_endpoint)
    rawproto.publish(sock, 1)
    assert rawproto.collect(sock, 1)[1]["code"] == "accepted"
    sock.close()


def test_publisher_waits_out_the_warmup_within_its_timeout(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """The client retries not_ready itself: publish_wait succeeds once the warm-up ends."""
    b = busd_factory(extra_args=("--warmup", "1"))
    with busd_client.Publisher(b.pub_endpoint, timeout=5.0) as pub:
        started = time.monotonic()
        r = pub.publish_wait("release.shop", "release", 2, RELEASE)
        assert r.accepted and r.attempts >= 2
        assert time.monotonic() - started < 4.0


def test_publisher_reports_not_ready_past_its_timeout(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """A warm-up longer than the publisher's timeout fails the message with NotReady."""
    b = busd_factory(extra_args=("--warmup", "30"))
    with busd_client.Publisher(b.pub_endpoint, timeout=0.5) as pub:
        r = pub.publish("release.shop", "release", 2, RELEASE)
        with pytest.raises(busd_client.NotReady) as info:
            r.result()
        assert info.value.code == "not_ready" and info.value.retry_after_ms > 25_000
