"""The real App: a bug in a check is answered ``internal``, counted, and logged with its
traceback at a limited rate; it never crashes busd or touches the next message."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgpack
import pytest
from conftest import TrackedContext
from inproc import app_config, serving
from rawproto import collect, dealer, envelope, publish

from busd.app import App
from busd.kernel.buckets import RateTable
from busd_protocol.codes import Reject


class BuggyRates:
    """The production rate table behind the production seam (``install_rates``), with a bug
    for one topic: ``admit`` raises."""

    def __init__(self, table: RateTable):
        self.table = table

    def admit(self, topic: str, publisher: str, now: float) -> Reject | None:
        if topic == "release.bug":
            raise ZeroDivisionError("a bug in a check")
        return self.table.admit(topic, publisher, now)


@pytest.mark.timeout(30)
async def test_a_check_that_raises_is_answered_internal_counted_and_logged_at_a_limited_rate(
    tmp_path: Path, zctx: TrackedContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="busd")
    app = App(app_config(tmp_path))
    async with serving(app):
        assert app.rates is not None
        app.admission.install_rates(BuggyRates(app.rates.table))
        pub = dealer(zctx, app.broker.pub_endpoint)
        raw = msgpack.packb(envelope("release.bug", publisher="buggy"))
        for seq in range(1, 21):
            publish(pub, seq, "release.bug", raw)
        publish(pub, 21, "release.shop")
        fates = await asyncio.to_thread(collect, pub, 21)
        pub.close()
    assert {fates[s]["code"] for s in range(1, 21)} == {"internal"}
    assert fates[1]["reason"] == "busd failed while checking this message (ZeroDivisionError)"
    assert fates[21]["code"] == "accepted"
    assert app.broker.stats.rejected["internal"] == 20
    lines = [r for r in caplog.records if r.getMessage() == "check failed"]
    assert len(lines) == 5  # the limit: 5 lines per 10 s per kind of failure
    for line in lines:
        assert line.levelno == logging.ERROR
        assert line.exc_info is not None and line.exc_info[0] is ZeroDivisionError
        assert (line.topic, line.publisher) == ("release.bug", "buggy")  # type: ignore[attr-defined]
        assert (line.schema, line.version) == ("release", 2)  # type: ignore[attr-defined]
    # An internal error is logged once, as "check failed", not also as "message rejected".
    assert not [r for r in caplog.records if r.getMessage() == "message rejected"]
