"""The control socket server on a real Unix socket, with the real rate handlers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from busd.control.rates_dir import RatesDir
from busd.control.server import ControlServer, ControlSocketError, rate_handlers
from busd.kernel.buckets import RateTable
from busd_protocol.rates import Limit

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="busd-ctl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Setup:
    def __init__(self, root: Path, **options: Any):
        self.table = RateTable()
        self.rates = RatesDir(
            root / "rates", lambda limits, _: self.table.configure(limits, time.monotonic())
        )
        self.path = root / "run" / "control.sock"

        async def boom(args: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("handler bug")

        async def echo(args: dict[str, Any]) -> dict[str, Any]:
            return {"args": args}

        self.release = asyncio.Event()
        self.holding = 0
        self.two_holding = asyncio.Event()

        async def hold(args: dict[str, Any]) -> dict[str, Any]:
            self.holding += 1
            if self.holding >= 2:
                self.two_holding.set()
            await self.release.wait()
            return {}

        handlers = {
            **rate_handlers(self.table, self.rates),
            "test.boom": boom,
            "test.echo": echo,
            "test.hold": hold,
        }
        self.server = ControlServer(self.path, handlers, **options)


@pytest.fixture
async def setup(short_dir: Path) -> AsyncIterator[Setup]:
    s = Setup(short_dir)
    await s.rates.start()
    await s.server.start()
    yield s
    await s.server.close()
    s.rates.close()


async def ask(path: Path, *requests: bytes | dict[str, Any]) -> list[dict[str, Any]]:
    """Send the requests on one connection, pipelined; one parsed reply per request."""
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    try:
        for request in requests:
            line = request if isinstance(request, bytes) else json.dumps(request).encode()
            writer.write(line + b"\n")
        await writer.drain()
        return [json.loads(await reader.readline()) for _ in requests]
    finally:
        writer.close()


def code(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    return str(reply["error"]["code"])


async def test_socket_is_mode_0600_in_a_private_0700_directory(setup: Setup) -> None:
    assert stat.S_IMODE(os.stat(setup.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(setup.path.parent).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(setup.path).st_mode)


async def test_set_writes_the_file_atomically_and_installs_the_limit(setup: Setup) -> None:
    [reply] = await ask(
        setup.path, {"cmd": "rates.set", "key": "publish.release", "rate": 500, "burst": "50"}
    )
    assert reply == {
        "ok": True,
        "key": "publish.release",
        "rate": 500.0,
        "burst": 50.0,
        "file": str(setup.rates.path / "publish.release"),
    }
    assert (setup.rates.path / "publish.release").read_text() == "500 50\n"
    assert sorted(p.name for p in setup.rates.path.iterdir()) == ["publish.release"]
    assert dict(setup.table.limits) == {"publish.release": Limit(500, 50)}
    [listing] = await ask(setup.path, {"cmd": "rates.list"})
    assert listing["limits"] == [
        {
            "key": "publish.release",
            "rate": 500.0,
            "burst": 50.0,
            "tokens": 50.0,
            "throttled_recent": 0,
            "throttled_total": 0,
            "disabled_recent": 0,
            "disabled_total": 0,
        }
    ]
    assert listing["errors"] == []
    assert listing["statistics"]["rate_keys"] == 1


async def test_clear_removes_the_file_and_the_limit(setup: Setup) -> None:
    await ask(setup.path, {"cmd": "rates.set", "key": "publish", "rate": "0"})
    assert setup.table.admit("t", "p", time.monotonic()) is not None
    first, second = await ask(
        setup.path,
        {"cmd": "rates.clear", "key": "publish"},
        {"cmd": "rates.clear", "key": "publish"},
    )
    assert (first["cleared"], second["cleared"]) == (True, False)
    assert not (setup.rates.path / "publish").exists()
    assert setup.table.admit("t", "p", time.monotonic()) is None


async def test_list_shows_throttles_and_rate_file_errors(setup: Setup) -> None:
    await ask(setup.path, {"cmd": "rates.set", "key": "publish", "rate": 1, "burst": 1})
    now = time.monotonic()
    setup.table.admit("t", "p", now)
    setup.table.admit("t", "p", now)
    (setup.rates.path / "publish").write_text("nan\n")
    await setup.rates.refresh()
    [listing] = await ask(setup.path, {"cmd": "rates.list"})
    assert [(r["key"], r["rate"], r["throttled_recent"]) for r in listing["limits"]] == [
        ("publish", 1.0, 1)
    ]
    [err] = listing["errors"]
    assert (err["file"], err["kind"], err["count"]) == ("publish", "content", 1)
    assert "nan" in err["message"]


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        (b"not json", "bad_request"),
        (b"\xff\xfe", "bad_request"),
        (b"[1, 2]", "bad_request"),
        (b'{"cmd": 5}', "bad_request"),
        (b'{"nocmd": 1}', "bad_request"),
        (b'{"cmd": "rates.set", "key": "publish", "rate": NaN}', "bad_request"),
        (b"[" * 50_000, "bad_request"),
        (b'{"cmd": "nope"}', "unknown_command"),
        (b'{"cmd": "rates.set", "key": "other", "rate": 5}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": "publish/x", "rate": 5}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": 5, "rate": 5}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": "publish", "rate": -5}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": "publish", "rate": "1e3"}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": "publish", "rate": 1e400}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": "publish", "rate": true}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": "publish", "rate": 5, "burst": 0}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": "publish", "rate": 5, "burts": 9}', "bad_argument"),
        (b'{"cmd": "rates.set", "key": "publish"}', "bad_argument"),
        (b'{"cmd": "rates.list", "x": 1}', "bad_argument"),
        (b'{"cmd": "test.boom"}', "internal"),
    ],
)
async def test_bad_requests_are_answered_and_the_connection_keeps_serving(
    setup: Setup, request_line: bytes, expected: str
) -> None:
    bad, good = await ask(setup.path, request_line, {"cmd": "test.echo", "a": 1})
    assert code(bad) == expected
    assert bad["error"]["message"]
    assert good == {"ok": True, "args": {"a": 1}}
    assert list(setup.rates.path.iterdir()) == []
    assert setup.server.statistics().errors_total == 1


async def test_a_line_over_the_limit_is_refused_and_the_connection_closed(short_dir: Path) -> None:
    s = Setup(short_dir, max_line=1024)
    await s.server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(os.fspath(s.path))
        writer.write(b'{"cmd": "test.echo", "pad": "' + b"x" * 5000 + b'"}\n')
        await writer.drain()
        reply = json.loads(await reader.readline())
        assert code(reply) == "bad_request" and "1024" in reply["error"]["message"]
        assert await reader.read() == b""  # closed
        writer.close()
        [ok] = await ask(s.path, {"cmd": "test.echo"})
        assert ok["ok"] is True
    finally:
        await s.server.close()


async def test_over_the_cap_a_new_connection_evicts_the_one_idle_the_longest(
    short_dir: Path,
) -> None:
    s = Setup(short_dir, max_connections=2)
    await s.server.start()
    held = [await asyncio.open_unix_connection(os.fspath(s.path)) for _ in range(2)]
    try:
        for reader, writer in held:  # both have been served, and are idle now
            writer.write(b'{"cmd": "test.echo"}\n')
            assert json.loads(await reader.readline())["ok"] is True
        reader, writer = await asyncio.open_unix_connection(os.fspath(s.path))
        writer.write(b'{"cmd": "test.echo"}\n')
        assert json.loads(await reader.readline())["ok"] is True
        writer.close()
        assert await asyncio.wait_for(held[0][0].read(), 5) == b""  # the oldest idle one
        st = s.server.statistics()
        assert (st.connections_evicted_total, st.connections_refused_total) == (1, 0)
    finally:
        for _, writer in held:
            writer.close()
        await s.server.close()


async def test_over_the_cap_with_every_connection_mid_request_a_new_one_is_told_busy(
    short_dir: Path,
) -> None:
    s = Setup(short_dir, max_connections=2)
    await s.server.start()
    held = [await asyncio.open_unix_connection(os.fspath(s.path)) for _ in range(2)]
    try:
        for _, writer in held:
            writer.write(b'{"cmd": "test.hold"}\n')
        await asyncio.wait_for(s.two_holding.wait(), 5)
        reader, writer = await asyncio.open_unix_connection(os.fspath(s.path))
        assert code(json.loads(await reader.readline())) == "busy"
        writer.close()
        assert s.server.statistics().connections_refused_total == 1
        s.release.set()
        for reader, _ in held:  # the requests in progress are answered
            assert json.loads(await reader.readline())["ok"] is True
    finally:
        for _, writer in held:
            writer.close()
        await s.server.close()


async def test_an_idle_connection_is_closed_after_the_idle_timeout(short_dir: Path) -> None:
    s = Setup(short_dir, idle_timeout=0.2)
    await s.server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(os.fspath(s.path))
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.15 < time.monotonic() - started < 3
        writer.close()
    finally:
        await s.server.close()


async def test_a_stale_socket_from_a_killed_busd_is_replaced(short_dir: Path) -> None:
    s = Setup(short_dir)
    s.path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(os.fspath(s.path))  # bound, never listening, then closed: what kill -9 leaves
    dead.close()
    await s.server.start()
    try:
        [ok] = await ask(s.path, {"cmd": "test.echo"})
        assert ok["ok"] is True
    finally:
        await s.server.close()
    assert not s.path.exists()


async def test_a_second_server_refuses_to_start_while_the_first_answers(setup: Setup) -> None:
    second = ControlServer(setup.path, {})
    with pytest.raises(ControlSocketError, match="another busd"):
        await second.start()
    [ok] = await ask(setup.path, {"cmd": "test.echo"})
    assert ok["ok"] is True


async def test_a_non_socket_file_at_the_path_is_not_replaced(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="not a socket"):
        await ControlServer(path, {}).start()
    assert path.read_text() == "precious"


async def test_an_over_long_path_is_refused_with_a_clear_error(short_dir: Path) -> None:
    with pytest.raises(ControlSocketError, match="107 bytes"):
        await ControlServer(short_dir / ("x" * 120) / "c.sock", {}).start()


FLOOD = """
import sys, threading
from busd_client.control import ControlClient

clients = [ControlClient(sys.argv[1], timeout=30) for _ in range(int(sys.argv[2]))]
for control in clients:
    control.call("test.echo")  # connected before the measurement starts
go = threading.Event()

def flood(control):
    go.wait()
    for _ in range(int(sys.argv[3])):
        assert len(control.call("rates.list")["limits"]) == 200

threads = [threading.Thread(target=flood, args=(c,)) for c in clients]
for t in threads:
    t.start()
print("go", flush=True)
go.set()
for t in threads:
    t.join()
"""


async def busy_work(stop: asyncio.Event) -> int:
    """Stands in for the broker: 200 us of this thread's CPU per step, yielding between."""
    steps = 0
    while not stop.is_set():
        until = time.thread_time() + 0.0002
        while time.thread_time() < until:
            pass
        steps += 1
        await asyncio.sleep(0)
    return steps


@pytest.mark.serial
async def test_a_flood_of_requests_leaves_the_loop_to_message_traffic(setup: Setup) -> None:
    """16 clients (another process) ask rates.list of 200 rows (~0.7 ms of work each) 8
    times each, while busy work competes on the same loop: the loop thread's CPU time is
    measured, so other processes on the machine do not skew the figure."""
    setup.table.configure({f"publisher.p{i}": Limit(10, 10) for i in range(200)}, 0.0)
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOD,
        os.fspath(setup.path),
        "16",
        "8",
        stdout=asyncio.subprocess.PIPE,
    )
    assert flood.stdout is not None
    stop = asyncio.Event()
    assert await flood.stdout.readline() == b"go\n"
    cpu_before = time.thread_time()
    worker = asyncio.create_task(busy_work(stop))
    assert await flood.wait() == 0
    stop.set()
    work = await worker * 0.0002
    share = work / (time.thread_time() - cpu_before)
    assert setup.server.statistics().requests_total == 16 + 128
    assert setup.server.statistics().errors_total == 0
    # Answering gets about 10 % of the loop; without the budget it takes most of it.
    assert share > 0.7, f"busy work got only {share:.0%} of the loop thread's CPU"
