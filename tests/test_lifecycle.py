"""Start-up, drain on SIGTERM, forced exit, and recovery from kill -9."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import BIN, BusdProcess, TrackedContext
from rawproto import collect, dealer, envelope, publish, subscriber, wait_subscribed


@pytest.mark.timeout(60)
def test_sigterm_with_messages_in_flight_answers_every_publish_and_exits_zero(
    busd_each_loop: BusdProcess, zctx: TrackedContext
) -> None:
    """SIGTERM while a publisher streams: every message read gets a reply; exit status 0."""
    busd = busd_each_loop
    pub = dealer(zctx, busd.pub_endpoint)
    pub.setsockopt(zmq.SNDTIMEO, 5000)  # never hang the test if busd vanished
    total = 20_000
    raw = msgpack.packb(envelope("release.drain"))
    for seq in range(1, total + 1):
        publish(pub, seq, "release.drain", raw)
        if seq == 2_000:
            busd.signal(signal.SIGTERM)
    # Everything sent before busd stopped reading is answered: accepted while the publisher
    # kept the line busy, or refused with shutting_down past the drain deadline.
    fates = collect(pub, total, timeout=30)
    assert set(fates) == set(range(1, total + 1))
    assert {f["code"] for f in fates.values()} <= {"accepted", "shutting_down"}
    assert busd.proc is not None
    assert busd.proc.wait(15) == 0
    assert any(line.get("event") == "drained" for line in busd.logs())
    pub.close()


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_kill_9_then_restart_on_the_same_endpoints_lets_existing_sockets_carry_on(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """After kill -9, busd restarts in under 2 s and the same DEALER and SUB carry on."""
    pub = dealer(zctx, busd.pub_endpoint)
    sub = subscriber(zctx, busd.sub_endpoint, "release.")
    wait_subscribed(zctx, busd.pub_endpoint, sub, "release.probe")
    publish(pub, 1, "release.a")
    assert collect(pub, 1)[1]["code"] == "accepted"
    assert sub.poll(5000)
    assert sub.recv_multipart()[0] == b"release.a"
    took = busd.restart()
    assert took < 2.0, f"start-up took {took:.2f}s"
    # The SUB re-sends its subscription on reconnect; the DEALER reconnects by itself.
    deadline = time.monotonic() + 10
    seq = 1
    got = None
    while time.monotonic() < deadline and got is None:
        seq += 1
        publish(pub, seq, "release.b", envelope("release.b", id=f"after-{seq}"))
        if sub.poll(200):
            got = msgpack.unpackb(sub.recv_multipart()[1])
    assert got is not None and got["id"].startswith("after-")
    pub.close()
    sub.close()


@pytest.mark.timeout(30)
def test_stale_ipc_socket_files_from_a_killed_busd_do_not_block_the_next_start(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path, zctx: TrackedContext
) -> None:
    """ipc:// endpoints: a kill -9 leaves socket files; the next start replaces them."""
    run = tmp_path / "ipc"
    run.mkdir()
    busd = busd_factory(start=False, extra_args=())
    busd.pub_endpoint = f"ipc://{run}/pub.sock"
    busd.sub_endpoint = f"ipc://{run}/sub.sock"
    busd.start()
    busd.kill()
    assert (run / "pub.sock").exists()
    busd.start()
    pub = dealer(zctx, busd.pub_endpoint)
    publish(pub, 1)
    assert collect(pub, 1)[1]["code"] == "accepted"
    pub.close()


@pytest.mark.timeout(30)
def test_a_second_busd_on_a_live_ipc_endpoint_refuses_to_start(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """A live busd's ipc socket is never stolen: the second exits 69 and says why."""
    run = tmp_path / "ipc"
    run.mkdir()
    first = busd_factory(start=False, name="first")
    first.pub_endpoint, first.sub_endpoint = f"ipc://{run}/pub.sock", f"ipc://{run}/sub.sock"
    first.start()
    second = busd_factory(start=False, name="second")
    second.pub_endpoint, second.sub_endpoint = first.pub_endpoint, first.sub_endpoint
    proc = subprocess.run(second.argv(), capture_output=True, timeout=20, check=False)
    assert proc.returncode == 69
    assert b"another live process" in proc.stderr
    assert first.proc is not None and first.proc.poll() is None


@pytest.mark.timeout(30)
def test_a_second_sigint_forces_an_immediate_exit(busd: BusdProcess, zctx: TrackedContext) -> None:
    """First SIGINT drains (a busy publisher keeps it draining); a second one forces exit."""
    pub = dealer(zctx, busd.pub_endpoint)
    raw = msgpack.packb(envelope("release.busy"))
    seq = 0
    busd.signal(signal.SIGINT)
    busd.wait_log("draining")
    busd.signal(signal.SIGINT)
    assert busd.proc is not None
    pub.setsockopt(zmq.SNDTIMEO, 100)
    while busd.proc.poll() is None and seq < 1_000_000:
        seq += 1
        try:
            publish(pub, seq, "release.busy", raw)
        except zmq.Again:
            break
    assert busd.proc.wait(10) == 1
    pub.close()


def test_check_config_prints_the_effective_configuration(tmp_path: Path) -> None:
    """Precedence: defaults < --config file < BUSD_* environment < flags."""
    config = tmp_path / "busd.toml"
    config.write_text('sub_endpoint = "tcp://127.0.0.1:9002"\npub_hwm = 5\nbatch = 7\n')
    env = {"BUSD_PUB_HWM": "6", "BUSD_SUB_ENDPOINT": "tcp://127.0.0.1:9003", "PATH": "/usr/bin"}
    out = subprocess.run(
        [
            str(BIN / "busd"),
            "--config",
            str(config),
            "--check-config",
            "--sub-endpoint",
            "tcp://127.0.0.1:9004",
        ],
        capture_output=True,
        timeout=20,
        env=env,
        check=True,
    )
    import json

    effective = json.loads(out.stdout)
    assert effective["sub_endpoint"] == "tcp://127.0.0.1:9004"
    assert effective["pub_hwm"] == 6
    assert effective["batch"] == 7
    assert effective["pub_endpoint"] == "tcp://127.0.0.1:7401"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pub-hwm", "ten"], b"pub_hwm"),
        (["--pub-endpoint", "http://x"], b"pub_endpoint"),
        (["--metrics", "nohost"], b"metrics"),
        (["--max-message-bytes", "2000000"], b"max_message_bytes"),
        (["--loop", "trio"], b"loop"),
        (["--schema-checks", "maybe"], b"schema_checks"),
        (["--state-endpoint", "http://x"], b"state_endpoint"),
        (["--state-endpoint", "tcp://127.0.0.1:7401"], b"pub_endpoint and state_endpoint"),
        (["--state-endpoint", "tcp://10.1.2.3:7404"], b"state_endpoint: tcp://10.1.2.3:7404"),
        (["--snapshot-max", "0"], b"snapshot_max"),
        (["--state-max-bytes", "0"], b"state_max_bytes"),
        (["--snapshot-timeout", "-1"], b"snapshot_timeout"),
    ],
)
def test_invalid_configuration_exits_78_naming_the_setting(args: list[str], message: bytes) -> None:
    """A bad setting is refused before anything binds (EX_CONFIG), with its name."""
    proc = subprocess.run(
        [str(BIN / "busd"), "--check-config", *args], capture_output=True, timeout=20, check=False
    )
    assert proc.returncode == 78
    assert message in proc.stderr


def test_unknown_key_in_the_config_file_is_refused(tmp_path: Path) -> None:
    """A typo in the TOML file is an error, not a silently ignored setting."""
    config = tmp_path / "busd.toml"
    config.write_text("pub_hmw = 5\n")
    proc = subprocess.run(
        [str(BIN / "busd"), "--config", str(config), "--check-config"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 78
    assert b"pub_hmw" in proc.stderr


def test_help_documents_every_option() -> None:
    """`busd --help` lists a flag for every configuration key."""
    out = subprocess.run(
        [str(BIN / "busd"), "--help"], capture_output=True, timeout=20, check=True
    ).stdout.decode()
    for flag in (
        "--pub-endpoint",
        "--sub-endpoint",
        "--control",
        "--rates-dir",
        "--schemas-dir",
        "--metrics",
        "--var-dir",
        "--config",
        "--check-config",
        "--max-message-bytes",
        "--drain-timeout",
    ):
        assert flag in out
