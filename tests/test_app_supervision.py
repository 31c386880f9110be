"""The real App object: how each way out ends (exit status, STOPPING=1) and that every way
out closes what start-up opened: no file descriptor outlives ``serve``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TrackedContext
from inproc import app_config, serving, until
from rawproto import dealer, publish

from busd.app import App
from busd.preflight import EXIT_OK, EXIT_SOFTWARE, EXIT_UNAVAILABLE


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what each one is."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the descriptor listdir itself used
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def opened_since(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not open (as the same thing) in ``before``."""
    return {fd: what for fd, what in open_fds().items() if before.get(fd) != what}


@pytest.fixture
def notify(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """NOTIFY_SOCKET for the App: a datagram socket on a short path."""
    folder = tempfile.mkdtemp(prefix="busd-sd-", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(folder, "notify"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", sock.getsockname())
    yield sock
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def datagrams(sock: socket.socket) -> list[str]:
    """The first line of every datagram received so far."""
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode().split("\n", 1)[0])
        except BlockingIOError:
            return got


@pytest.mark.timeout(30)
async def test_a_task_crashing_past_its_restart_budget_drains_and_exits_70(
    tmp_path: Path, notify: socket.socket
) -> None:
    before = open_fds()
    app = App(app_config(tmp_path, metrics="127.0.0.1:0"))
    crashes = 0

    async def flaky() -> None:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("peripheral failure")

    app.supervisor.add("flaky", flaky)
    status = await asyncio.wait_for(app.serve(), 20)
    assert status == EXIT_SOFTWARE
    assert crashes == 3  # the first run and two restarts, then the budget is spent
    assert app.draining
    assert app.supervisor.restarts_total["flaky"] == 2  # restarts, not crashes
    assert "STOPPING=1" in datagrams(notify)
    assert opened_since(before) == {}


@pytest.mark.timeout(30)
async def test_a_task_that_crashes_once_is_restarted_and_busd_keeps_serving(tmp_path: Path) -> None:
    app = App(app_config(tmp_path))
    restarted = asyncio.Event()
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("one-off failure")
        restarted.set()
        await asyncio.Event().wait()  # then serve for ever

    app.supervisor.add("once", once)
    serving_task = asyncio.create_task(app.serve())
    await asyncio.wait_for(restarted.wait(), 10)
    assert not serving_task.done() and not app.draining
    app.begin_drain()
    assert await asyncio.wait_for(serving_task, 10) == 0


@pytest.mark.timeout(30)
async def test_a_drained_busd_closes_every_descriptor_it_opened(
    tmp_path: Path, notify: socket.socket
) -> None:
    """Metrics port, control socket, rates directory, notify socket, monitors, broker
    sockets and the zmq context's own descriptors: all gone once serve returns."""
    config = app_config(tmp_path, metrics="127.0.0.1:0")
    # The test's publisher has a context of its own, terminated before the check: its
    # connection (and reconnection attempts once busd is gone) are descriptors libzmq's I/O
    # thread closes whenever it runs; term() returns once it has closed them all.
    own = TrackedContext()
    pub = dealer(own, config.pub_endpoint)  # the test's own context opens its fds now
    try:
        before = open_fds()
        app = App(config)
        async with serving(app) as task:
            await until(lambda: "READY=1" in datagrams(notify), "READY=1")
            assert len(open_fds()) > len(before) + 5  # what the leak check below is about
            publish(pub, 1)
        assert task.result() == EXIT_OK
    finally:
        pub.close()
        own.term()
    assert opened_since(before) == {}


@pytest.mark.timeout(30)
async def test_a_start_up_that_fails_late_closes_what_it_had_opened(
    tmp_path: Path, notify: socket.socket
) -> None:
    """The metrics port is taken: by then the broker, its monitors, the control socket and
    the rates directory are open; busd exits 69 and none of them stays open."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        before = open_fds()
        app = App(app_config(tmp_path, metrics=f"127.0.0.1:{taken.getsockname()[1]}"))
        assert await asyncio.wait_for(app.serve(), 20) == EXIT_UNAVAILABLE
        assert opened_since(before) == {}
    assert not (tmp_path / "run" / "control.sock").exists()


@pytest.mark.timeout(30)
async def test_a_broker_crash_sends_stopping_closes_everything_and_exits_70_at_once(
    tmp_path: Path, notify: socket.socket, zctx: TrackedContext
) -> None:
    """A socket error ends the broker task (here its XPUB socket is closed under it, and a
    publish makes it use it): the supervised tasks are cancelled without a drain."""
    config = app_config(tmp_path, metrics="127.0.0.1:0", drain_timeout=60.0)
    pub = dealer(zctx, config.pub_endpoint)
    before = open_fds()
    app = App(config)
    async with serving(app) as task:
        xpub = app.broker._xpub
        assert xpub is not None
        xpub.close(linger=0)
        publish(pub, 1)
        status = await asyncio.wait_for(asyncio.shield(task), 10)
    assert status == EXIT_SOFTWARE
    assert not app.draining  # no drain: the broker is gone
    assert datagrams(notify)[-1] == "STOPPING=1"
    assert opened_since(before) == {}
    pub.close()
