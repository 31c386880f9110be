"""busdctl pub / busdctl sub, run as the installed console script against a real busd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from busd_client import Message, Publisher, Subscriber

BUSDCTL = str(Path(sys.executable).parent / "busdctl")
PROBE = "release.cli.probe"


def release(i: int = 0) -> dict[str, Any]:
    """A valid release v2 payload (busd checks schemas) numbered ``i``."""
    return {"slug": "https://apps.example/shop/releases/42", "cmd": "bin/web", "env": {"N": str(i)}}


def busdctl(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUSDCTL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def start_sub(busd: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [BUSDCTL, "sub", "--sub-endpoint", busd.sub_endpoint, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def feed_until_exit(
    busd: Any, proc: subprocess.Popen[str], topic: str, timeout: float = 15
) -> tuple[str, str]:
    """Publish to ``topic`` until ``proc`` exits (a late subscription misses the first ones)."""
    deadline = time.monotonic() + timeout
    with Publisher(busd.pub_endpoint, name="feeder") as pub:
        i = 0
        while proc.poll() is None:
            assert time.monotonic() < deadline, "busdctl sub did not exit"
            pub.publish_wait(topic, "release", 2, release(i))
            i += 1
    return proc.communicate(timeout=5)


class Received:
    """A subscriber on ``release.cli.`` whose subscription has reached busd; skips the probes."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub

    def take(self, count: int, timeout: float = 5.0) -> list[Message]:
        got: list[Message] = []
        while len(got) < count:
            message = self.sub.recv(timeout)
            assert message is not None, f"got {len(got)} of {count} messages"
            if message.topic != PROBE:
                got.append(message)
        return got


@pytest.fixture
def sub(busd: Any) -> Iterator[Received]:
    with (
        Subscriber(busd.sub_endpoint, "release.cli.") as s,
        Publisher(busd.pub_endpoint, name="joiner") as pub,
    ):
        deadline = time.monotonic() + 10
        while True:  # until the subscription reached busd
            pub.publish_wait(PROBE, "release", 2, release())
            if s.recv(0.05) is not None:
                break
            assert time.monotonic() < deadline
        yield Received(s)


@pytest.mark.timeout(30)
def test_pub_with_data_publishes_one_message_and_exits_zero(busd: Any, sub: Received) -> None:
    result = busdctl(
        "pub",
        "release.cli.one",
        "--schema",
        "release",
        "--version",
        "2",
        "--data",
        json.dumps(release(1)),
        "--id",
        "fixed-id",
        "--publisher",
        "ops",
        "--pub-endpoint",
        busd.pub_endpoint,
    )
    assert result.returncode == 0, result.stderr
    assert "accepted 1, failed 0" in result.stderr
    [message] = sub.take(1)
    assert (
        message.topic,
        message.schema,
        message.version,
        message.id,
        message.publisher,
        message.data,
    ) == ("release.cli.one", "release", 2, "fixed-id", "ops", release(1))


@pytest.mark.timeout(30)
def test_pub_reads_json_lines_from_stdin_using_env_endpoint(busd: Any, sub: Received) -> None:
    lines = "".join(json.dumps(release(i)) + "\n" for i in range(200))
    result = busdctl(
        "pub",
        "release.cli.many",
        "--schema",
        "release",
        "--version",
        "2",
        "--json",
        stdin=lines,
        env={"BUSD_PUB_ENDPOINT": busd.pub_endpoint},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "accepted": 200,
        "rejected": {},
        "bad_input": 0,
        "unsent": 0,
    }
    assert [m.data for m in sub.take(200)] == [release(i) for i in range(200)]


@pytest.mark.timeout(30)
def test_pub_reports_bad_lines_and_exits_non_zero(busd: Any, sub: Received) -> None:
    good = [json.dumps(release(i)) for i in (1, 2)]
    result = busdctl(
        "pub",
        "release.cli.mixed",
        "--schema",
        "release",
        "--version",
        "2",
        "--pub-endpoint",
        busd.pub_endpoint,
        stdin=f"{good[0]}\nnot json\n[1, 2]\n\n{good[1]}\n",
    )
    assert result.returncode == 1
    assert "line 2: not a JSON object" in result.stderr
    assert "line 3: not a JSON object" in result.stderr
    assert "accepted 2, failed 0, bad input 2" in result.stderr
    assert [m.data for m in sub.take(2)] == [release(1), release(2)]


@pytest.mark.timeout(30)
def test_pub_prints_each_rejection_code_and_reason(busd: Any) -> None:
    bad = {**release(), "cmd": 7}
    result = busdctl(
        "pub",
        "release.cli.bad",
        "--schema",
        "release",
        "--version",
        "2",
        "--pub-endpoint",
        busd.pub_endpoint,
        stdin=f"{json.dumps(bad)}\n{json.dumps(release())}\n{json.dumps(bad)}\n",
    )
    assert result.returncode == 1
    rejections = [line for line in result.stderr.splitlines() if "rejected invalid:" in line]
    assert len(rejections) == 2
    assert rejections[0].startswith("busdctl: line 1 (id ")
    assert "cmd" in rejections[0]
    assert "accepted 1, failed 2 (invalid 2)" in result.stderr


@pytest.mark.timeout(30)
def test_pub_gives_up_and_exits_3_when_busd_is_unreachable(tmp_path: Path) -> None:
    start = time.monotonic()
    result = busdctl(
        "pub",
        "cli.x",
        "--schema",
        "s",
        "--version",
        "1",
        "--timeout",
        "0.3",
        "--pub-endpoint",
        f"ipc://{tmp_path}/nobody",
        stdin='{"a": 1}\n{"a": 2}\n',
    )
    assert result.returncode == 3  # unreachable, as for every command
    assert "giving up" in result.stderr and "not sent 1" in result.stderr
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("args", [["--data", "[1]"], ["--data", "{"], ["--id", "x"]])
def test_pub_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    result = busdctl(
        "pub",
        "cli.x",
        "--schema",
        "s",
        "--version",
        "1",
        *args,
        "--pub-endpoint",
        f"ipc://{tmp_path}/nobody",
        timeout=10,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("busdctl: ")


@pytest.mark.timeout(40)
def test_sub_prints_count_messages_as_json_lines_and_exits_zero(busd: Any) -> None:
    proc = start_sub(busd, "release.cli.", "--count", "3", "--timeout", "30")
    out, err = feed_until_exit(busd, proc, "release.cli.sub")
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    assert all(
        set(r) == {"topic", "schema", "version", "id", "publisher", "ts", "data"} for r in rows
    )
    assert [r["topic"] for r in rows] == ["release.cli.sub"] * 3
    assert rows[0]["publisher"] == "feeder"
    assert int(rows[1]["data"]["env"]["N"]) == int(rows[0]["data"]["env"]["N"]) + 1


@pytest.mark.timeout(40)
def test_busdctl_pub_to_busdctl_sub_end_to_end(busd: Any) -> None:
    proc = start_sub(busd, "release.cli.e2e", "--count", "1", "--timeout", "30")
    deadline = time.monotonic() + 15
    while proc.poll() is None:
        assert time.monotonic() < deadline
        result = busdctl(
            "pub",
            "release.cli.e2e",
            "--schema",
            "release",
            "--version",
            "2",
            "--data",
            json.dumps(release(5)),
            "--pub-endpoint",
            busd.pub_endpoint,
        )
        assert result.returncode == 0, result.stderr
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert json.loads(out.splitlines()[0])["data"] == release(5)


@pytest.mark.timeout(30)
def test_sub_timeout_with_fewer_than_count_exits_non_zero(busd: Any) -> None:
    start = time.monotonic()
    result = busdctl(
        "sub",
        "nothing.here",
        "--count",
        "2",
        "--timeout",
        "2",
        env={"BUSD_SUB_ENDPOINT": busd.sub_endpoint},
    )
    assert result.returncode == 1  # connected: not unreachable, just too few messages
    assert result.stdout == ""
    assert "timed out after 2 s with 0 of 2 message(s)\n" in result.stderr
    assert time.monotonic() - start < 10


@pytest.mark.timeout(30)
def test_sub_that_never_connects_says_so_and_exits_3_at_its_timeout(tmp_path: Path) -> None:
    result = busdctl("sub", "--timeout", "4", "--sub-endpoint", f"ipc://{tmp_path}/nobody")
    assert result.returncode == 3
    assert f"busdctl sub: not connected to ipc://{tmp_path}/nobody after 3 s; still trying" in (
        result.stderr
    )
    assert "never connected to busd" in result.stderr


class Lines(threading.Thread):
    """Lines a process writes on one of its pipes, as they come."""

    def __init__(self, pipe: Any) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines: list[str] = []

    def run(self) -> None:
        for line in self.pipe:
            self.lines.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@pytest.mark.timeout(60)
def test_sub_at_an_endpoint_busd_is_not_on_yet_says_so_keeps_trying_and_gets_messages(
    busd_factory: Any,
) -> None:
    busd = busd_factory(start=False)
    proc = subprocess.Popen(
        [BUSDCTL, "sub", "release.", "--count", "1", "--sub-endpoint", busd.sub_endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    errors = Lines(proc.stderr)
    errors.start()
    try:
        wait_for(
            lambda: errors.saw(f"not connected to {busd.sub_endpoint} after 3 s; still trying"),
            timeout=15,
            what="the not-connected notice",
        )
        assert proc.poll() is None  # still trying
        busd.start()
        wait_for(
            lambda: errors.saw(f"busdctl sub: connected to {busd.sub_endpoint}"),
            timeout=15,
            what="the connected notice",
        )
        out, _ = feed_until_exit(busd, proc, "release.late")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        errors.join(5)
    assert proc.returncode == 0
    assert json.loads(out)["topic"] == "release.late"
