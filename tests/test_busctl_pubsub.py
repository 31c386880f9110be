"""busctl pub / busctl sub, run as the installed console script against a real busd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from busd_client import Message, Publisher, Subscriber

BUSCTL = str(Path(sys.executable).parent / "busctl")


def busctl(*args: str, stdin: str = "", env: dict[str, str] | None = None,
           timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUSCTL, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def start_sub(busd: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([BUSCTL, "sub", "--sub-endpoint", busd.sub_endpoint, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def feed_until_exit(busd: Any, proc: subprocess.Popen[str], topic: str,
                    timeout: float = 15) -> tuple[str, str]:
    """Publish to ``topic`` until ``proc`` exits (a late subscription misses the first ones)."""
    deadline = time.monotonic() + timeout
    with Publisher(busd.pub_endpoint, name="feeder") as pub:
        i = 0
        while proc.poll() is None:
            assert time.monotonic() < deadline, "busctl sub did not exit"
            pub.publish_wait(topic, "release", 1, {"i": i})
            i += 1
    return proc.communicate(timeout=5)


class Received:
    """A subscriber on ``cli.`` whose subscription has reached busd; skips the probes."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub

    def take(self, count: int, timeout: float = 5.0) -> list[Message]:
        got: list[Message] = []
        while len(got) < count:
            message = self.sub.recv(timeout)
            assert message is not None, f"got {len(got)} of {count} messages"
            if message.topic != "cli.probe":
                got.append(message)
        return got


@pytest.fixture
def sub(busd: Any) -> Iterator[Received]:
    with Subscriber(busd.sub_endpoint, "cli.") as s, \
            Publisher(busd.pub_endpoint, name="joiner") as pub:
        deadline = time.monotonic() + 10
        while True:  # until the subscription reached busd
            pub.publish_wait("cli.probe", "probe", 1, {})
            if s.recv(0.05) is not None:
                break
            assert time.monotonic() < deadline
        yield Received(s)


@pytest.mark.timeout(30)
def test_pub_with_data_publishes_one_message_and_exits_zero(busd: Any, sub: Received) -> None:
    result = busctl("pub", "cli.one", "--schema", "release", "--version", "2",
                    "--data", '{"slug": "s", "n": 1}', "--id", "fixed-id",
                    "--publisher", "ops", "--pub-endpoint", busd.pub_endpoint)
    assert result.returncode == 0, result.stderr
    assert "accepted 1, failed 0" in result.stderr
    [message] = sub.take(1)
    assert (message.topic, message.schema, message.version, message.id, message.publisher,
            message.data) == ("cli.one", "release", 2, "fixed-id", "ops", {"slug": "s", "n": 1})


@pytest.mark.timeout(30)
def test_pub_reads_json_lines_from_stdin_using_env_endpoint(busd: Any, sub: Received) -> None:
    lines = "".join(json.dumps({"i": i}) + "\n" for i in range(200))
    result = busctl("pub", "cli.many", "--schema", "release", "--version", "1", "--json",
                    stdin=lines, env={"BUSD_PUB_ENDPOINT": busd.pub_endpoint})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"accepted": 200, "rejected": {}, "bad_input": 0,
                                         "unsent": 0}
    assert [m.data["i"] for m in sub.take(200)] == list(range(200))


@pytest.mark.timeout(30)
def test_pub_reports_bad_lines_and_exits_non_zero(busd: Any, sub: Received) -> None:
    result = busctl("pub", "cli.mixed", "--schema", "release", "--version", "1",
                    "--pub-endpoint", busd.pub_endpoint,
                    stdin='{"a": 1}\nnot json\n[1, 2]\n\n{"a": 2}\n')
    assert result.returncode == 1
    assert "line 2: not a JSON object" in result.stderr
    assert "line 3: not a JSON object" in result.stderr
    assert "accepted 2, failed 0, bad input 2" in result.stderr
    assert [m.data for m in sub.take(2)] == [{"a": 1}, {"a": 2}]


@pytest.mark.timeout(30)
def test_pub_prints_rejection_code_and_reason(busd: Any) -> None:
    result = busctl("pub", "bad topic", "--schema", "release", "--version", "1",
                    "--data", "{}", "--pub-endpoint", busd.pub_endpoint)
    assert result.returncode == 1
    assert "rejected bad_topic:" in result.stderr
    assert "accepted 0, failed 1 (bad_topic 1)" in result.stderr


@pytest.mark.timeout(30)
def test_pub_gives_up_when_busd_is_unreachable(tmp_path: Path) -> None:
    start = time.monotonic()
    result = busctl("pub", "cli.x", "--schema", "s", "--version", "1", "--timeout", "0.3",
                    "--pub-endpoint", f"ipc://{tmp_path}/nobody", stdin='{"a": 1}\n{"a": 2}\n')
    assert result.returncode == 1
    assert "giving up" in result.stderr and "not sent 1" in result.stderr
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("args", [["--data", "[1]"], ["--data", "{"], ["--id", "x"]])
def test_pub_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    result = busctl("pub", "cli.x", "--schema", "s", "--version", "1", *args,
                    "--pub-endpoint", f"ipc://{tmp_path}/nobody", timeout=10)
    assert result.returncode == 2
    assert result.stderr.startswith("busctl: ")


@pytest.mark.timeout(40)
def test_sub_prints_count_messages_as_json_lines_and_exits_zero(busd: Any) -> None:
    proc = start_sub(busd, "cli.", "--count", "3", "--timeout", "30")
    out, err = feed_until_exit(busd, proc, "cli.sub")
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    assert all(set(r) == {"topic", "schema", "version", "id", "publisher", "ts", "data"}
               for r in rows)
    assert [r["topic"] for r in rows] == ["cli.sub"] * 3
    assert rows[0]["publisher"] == "feeder"
    assert rows[1]["data"]["i"] == rows[0]["data"]["i"] + 1


@pytest.mark.timeout(40)
def test_busctl_pub_to_busctl_sub_end_to_end(busd: Any) -> None:
    proc = start_sub(busd, "cli.e2e", "--count", "1", "--timeout", "30")
    deadline = time.monotonic() + 15
    while proc.poll() is None:
        assert time.monotonic() < deadline
        result = busctl("pub", "cli.e2e", "--schema", "release", "--version", "1",
                        "--data", '{"hello": "world"}', "--pub-endpoint", busd.pub_endpoint)
        assert result.returncode == 0, result.stderr
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert json.loads(out)["data"] == {"hello": "world"}


@pytest.mark.timeout(30)
def test_sub_timeout_with_fewer_than_count_exits_non_zero(busd: Any) -> None:
    start = time.monotonic()
    result = busctl("sub", "nothing.here", "--count", "2", "--timeout", "0.5",
                    env={"BUSD_SUB_ENDPOINT": busd.sub_endpoint})
    assert result.returncode == 1
    assert result.stdout == ""
    assert "timed out after 0.5 s with 0 of 2" in result.stderr
    assert time.monotonic() - start < 10
