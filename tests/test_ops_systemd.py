"""sd_notify from a real busd to a real Unix datagram socket, and the shipped unit file."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import BIN, REPO, BusdProcess, TrackedContext
from rawproto import collect, dealer, publish

from busd.ops.systemd import Notifier, socket_address, watchdog_interval
from busd.statistics import NotifyStatistics

UNIT = REPO / "deploy" / "systemd" / "busd.service"


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket on a short path (sun_path is 108 bytes)."""
    folder = tempfile.mkdtemp(prefix="busd-sd-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    yield sock, path
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def receive(
    sock: socket.socket, until: Callable[[list[str]], bool], timeout: float = 5.0
) -> list[str]:
    """Datagrams (as text) until ``until(got)`` holds; fails after ``timeout`` seconds."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; got {got}")
        sock.settimeout(left)
        got.append(sock.recv(4096).decode())
    return got


def first_lines(datagrams: list[str]) -> list[str]:
    return [d.split("\n", 1)[0] for d in datagrams]


@pytest.mark.timeout(30)
def test_busd_sends_ready_then_watchdog_pings_then_stopping_in_order(
    busd_factory: Callable[..., BusdProcess], notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    busd = busd_factory(start=False)
    busd.env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    busd.start()
    got = receive(sock, lambda g: first_lines(g).count("WATCHDOG=1") >= 3)
    assert first_lines(got)[0] == "READY=1"
    assert busd.proc is not None
    assert f"MAINPID={busd.proc.pid}" in got[0].split("\n")
    started = time.monotonic()
    more = receive(sock, lambda g: first_lines(g).count("WATCHDOG=1") >= 5)
    # WATCHDOG_USEC/2 = 0.1 s between pings: five in well under two seconds.
    assert time.monotonic() - started < 2.0
    assert busd.terminate() == 0
    tail = receive(sock, lambda g: "STOPPING=1" in first_lines(g))
    order = first_lines(got + more + tail)
    assert order.index("READY=1") < order.index("WATCHDOG=1") < order.index("STOPPING=1")
    assert order.count("READY=1") == 1 and order.count("STOPPING=1") == 1


@pytest.mark.timeout(30)
def test_an_abstract_notify_socket_name_starting_with_at_is_used(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    name = f"busd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        busd = busd_factory(start=False)
        busd.env = {"NOTIFY_SOCKET": "@" + name}
        busd.start()
        assert first_lines(receive(sock, lambda g: len(g) >= 1)) == ["READY=1"]
        # No WATCHDOG_USEC: no pings; the next datagram is STOPPING=1.
        busd.terminate()
        assert first_lines(receive(sock, lambda g: len(g) >= 1)) == ["STOPPING=1"]


def test_without_notify_socket_every_notification_is_a_no_op() -> None:
    notifier = Notifier(env={}, pid=1234)
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.ping() is False
    assert notifier.watchdog is None


def test_a_watchdog_meant_for_another_pid_or_zero_is_ignored() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "3000000"}, pid=7) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"}, pid=7) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=7) is None
    assert socket_address("@abc") == "\0abc"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("vsock:2:1234") is None


def test_a_vanished_notify_socket_is_counted_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone")}, pid=1)
    assert notifier.ready() is False
    assert notifier.statistics() == NotifyStatistics(sent_total=0, failed_total=1)
    notifier.close()


@pytest.mark.timeout(30)
@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (no systemd on this machine)",
)
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    """The shipped unit, with ExecStart pointed at this checkout's busd (verify checks that
    the binary exists)."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/busd/bin/busd " in text
    unit = tmp_path / "busd.service"
    unit.write_text(text.replace("/opt/busd/bin/busd", str(BIN / "busd")))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    for needed in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "StartLimitBurst=",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "RuntimeDirectory=busd",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert needed in text, needed


@pytest.mark.timeout(30)
def test_ready_is_sent_when_the_warm_up_ends_after_status_lines_counting_it_down(
    busd_factory: Callable[..., BusdProcess],
    notify_socket: tuple[socket.socket, str],
    zctx: TrackedContext,
) -> None:
    """So `systemctl start` returns only once busd accepts publishes: a publish sent when
    READY=1 has arrived is accepted, never answered not_ready."""
    sock, path = notify_socket
    busd = busd_factory(start=False, extra_args=("--warmup", "3"))
    busd.env = {"NOTIFY_SOCKET": path}
    busd.start()
    got = receive(sock, lambda g: "READY=1" in first_lines(g), timeout=15)
    pub = dealer(zctx, busd.pub_endpoint)
    publish(pub, 1)
    assert collect(pub, 1)[1]["code"] == "accepted"
    pub.close()
    statuses = [d for d in got if d.startswith("STATUS=warming up, ")]
    assert statuses and got.index(statuses[0]) == 0  # the first thing systemd hears
    assert statuses[0].endswith(" s left") and float(statuses[0].split(", ")[1][:-7]) > 0
    assert got[-1].split("\n") == ["READY=1", "STATUS=serving", f"MAINPID={busd.proc.pid}"]  # type: ignore[union-attr]
    assert busd.terminate() == 0


@pytest.mark.timeout(30)
def test_a_drain_during_the_warm_up_sends_stopping_and_never_ready(
    busd_factory: Callable[..., BusdProcess], notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    busd = busd_factory(start=False, extra_args=("--warmup", "30"))
    busd.env = {"NOTIFY_SOCKET": path}
    busd.start()
    receive(sock, lambda g: len(g) >= 1)
    assert busd.terminate() == 0
    got = receive(sock, lambda g: "STOPPING=1" in first_lines(g))
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.recv(4096).decode())
    assert "READY=1" not in first_lines(got)


def unit_settings() -> dict[str, list[str]]:
    """key -> every value the unit gives it, in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_does_not_restart_busd_after_a_configuration_error() -> None:
    """78 (EX_CONFIG) is busd's exit status for a bad configuration and 2 for bad arguments:
    restarting cannot help. 69 (a port still taken) is retried."""
    [statuses] = unit_settings()["RestartPreventExitStatus"]
    assert set(statuses.split()) == {"2", "78"}
    assert unit_settings()["Restart"] == ["always"]


def test_the_unit_is_hardened_as_systemd_analyze_security_asks() -> None:
    settings = unit_settings()
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert settings["UMask"] == ["0077"]
    assert settings["IPAddressDeny"] == ["any"]
    assert settings["IPAddressAllow"] == ["localhost"]
    assert settings["PrivateMounts"] == ["yes"]


def test_the_units_documentation_is_a_file_the_install_steps_install() -> None:
    """Documentation=file:DIR/NAME: deploy/README.md installs docs/NAME into DIR."""
    install = (REPO / "deploy" / "README.md").read_text()
    for url in unit_settings()["Documentation"][0].split():
        assert url.startswith("file:"), url
        path = Path(url.removeprefix("file:"))
        assert (REPO / "docs" / path.name).is_file(), path.name
        assert f"install -D -m 0644 -t {path.parent} docs/*.md" in install


@pytest.mark.timeout(30)
@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (no systemd on this machine)",
)
def test_systemd_analyze_security_flags_none_of_the_settings_busd_can_tighten(
    tmp_path: Path,
) -> None:
    """What is still flagged is what busd needs: its own root directory, Unix and IP
    sockets, the host's network, ProcSubset= (see the unit) and users/devices defaults."""
    unit = tmp_path / "busd.service"
    unit.write_text(UNIT.read_text().replace("/opt/busd/bin/busd", str(BIN / "busd")))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    if "--offline" in result.stderr:
        pytest.skip(f"systemd-analyze security --offline unsupported: {result.stderr.strip()}")
    flagged = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")]
    for tightened in (
        "SystemCallFilter=~@privileged",
        "SystemCallFilter=~@resources",
        "UMask=",
        "PrivateMounts=",
    ):
        assert tightened not in flagged, result.stdout
    assert "IPAddressDeny=" not in flagged or "only localhost entries" in result.stdout
    exposure = float(
        result.stdout.rsplit("Overall exposure level for busd.service:", 1)[1].split()[0]
    )
    assert exposure <= 1.5, result.stdout
