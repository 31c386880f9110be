"""Order through retries: a refused-then-resent message is not overtaken by later ones of
its topic (docs/client.md "Order"), with a window of 1,000 in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BusdProcess

from busd_client import Publisher, RateLimited, Subscriber

pytestmark = pytest.mark.timeout(90)
BUSCTL = str(Path(sys.executable).parent / "busdctl")
N = 2000


def release_v1(i: int) -> dict[str, Any]:
    return {"slug": f"https://apps.example/shop/releases/{i}", "cmd": "bin/web", "env": {}}


def numbers(sub: Subscriber, count: int, timeout: float) -> list[int]:
    """The release numbers of the next ``count`` messages, in arrival order."""
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {count} arrived"
        m = sub.recv(timeout=left)
        if m is not None:
            got.append(int(m.data["slug"].rsplit("/", 1)[1]))
    return got


def set_rate(busd: Any, key: str, content: str) -> None:
    tmp = Path(busd.rates_dir) / f".{key}.new"
    tmp.write_text(content)
    tmp.rename(Path(busd.rates_dir) / key)


def test_warmup_refusals_are_resent_in_publish_order(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """2,000 messages published during warm-up with a window of 1,000 arrive in order."""
    b = busd_factory(extra_args=("--warmup", "1.5"))
    with (
        Subscriber(b.sub_endpoint, "release.") as sub,
        Publisher(b.pub_endpoint, name="order", window=1000, timeout=20) as pub,
    ):
        receipts = [pub.publish("release.app-1", "release", 1, release_v1(i)) for i in range(N)]
        assert pub.flush(30) == []
        assert sum(r.attempts for r in receipts) > N  # warm-up refused some first
        assert numbers(sub, N, 30) == list(range(N))


def test_rate_limited_retries_keep_publish_order(busd: BusdProcess) -> None:
    """Under a rate limit that refuses most of a burst, the retried messages and the ones
    behind them arrive in publish order."""
    with (
        Subscriber(busd.sub_endpoint, "release.app") as sub,
        Publisher(busd.pub_endpoint, name="order", window=1000, retry_deadline=60) as pub,
    ):
        set_rate(busd, "publish", "1000 50\n")
        deadline = time.monotonic() + 10
        while True:  # busd has read the rate file once a burst is refused
            try:
                for _ in range(200):
                    pub.publish_wait(
                        "release.probe", "release", 1, release_v1(0), retry_deadline=None
                    )
            except RateLimited:
                break
            assert time.monotonic() < deadline, "busd never applied the rate file"
        receipts = [pub.publish("release.app-1", "release", 1, release_v1(i)) for i in range(N)]
        assert pub.flush(60) == []
        assert sum(r.attempts for r in receipts) > N  # the limit refused some first
        assert numbers(sub, N, 30) == list(range(N))


def test_busdctl_pub_during_warmup_delivers_in_order(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """The issue's scenario: 2,000 lines piped into busdctl pub one second after start."""
    b = busd_factory(extra_args=("--warmup", "2"))
    started = time.monotonic()
    with Subscriber(b.sub_endpoint, "release.") as sub:
        lines = "".join(json.dumps(release_v1(i)) + "\n" for i in range(N))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))  # the scenario's timing
        done = subprocess.run(
            [
                BUSCTL,
                "pub",
                "release.app-1",
                "--schema",
                "release",
                "--version",
                "1",
                "--pub-endpoint",
                b.pub_endpoint,
                "--timeout",
                "10",
            ],
            input=lines,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(os.environ),
        )
        assert done.returncode == 0, done.stderr
        assert numbers(sub, N, 30) == list(range(N))
