"""/metrics, /healthz and /readyz on a real busd after known traffic."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import BusdProcess, TrackedContext, wait_for
from opshttp import PROMTOOL, get, needs_promtool, scrape, scrape_text, value
from rawproto import collect, dealer, envelope, header, publish

CODES = (
    "bad_frame",
    "unsupported_protocol",
    "too_large",
    "bad_encoding",
    "bad_topic",
    "bad_envelope",
    "unknown_schema",
    "unknown_version",
    "retired_version",
    "schema_not_allowed",
    "invalid",
    "rate_limited",
    "disabled",
    "shutting_down",
    "internal",
)


Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_when(busd: BusdProcess, condition: Callable[[Scrape], bool], what: str) -> Scrape:
    """Scrape until ``condition`` holds for a scrape; returns that scrape."""

    def attempt() -> Scrape | None:
        s = scrape(busd.metrics)
        return s if condition(s) else None

    result: Scrape = wait_for(attempt, what=what)
    return result


def send_known_traffic(
    ctx: TrackedContext, pub: zmq.Socket[bytes], endpoint: str
) -> dict[str, int]:
    """8 accepted and 8 rejected messages of 6 codes; returns the expected counters."""
    accepted_envs = [msgpack.packb(envelope("release.metrics", id=f"ok-{i}")) for i in range(7)]
    for seq, env in enumerate(accepted_envs, start=1):
        publish(pub, seq, "release.metrics", env)
    bad_encoding = b"\xc1\x00"
    bad_topic = msgpack.packb(envelope("release.other"))
    no_id = envelope("release.metrics")
    del no_id["id"]
    bad_envelope = msgpack.packb(no_id)
    too_large = msgpack.packb(envelope("release.metrics", pad="x" * 70_000))
    pub.send_multipart([header(8), b"release.metrics"])  # bad_frame: 2 frames
    publish(pub, 9, "release.metrics", accepted_envs[0])
    publish(pub, 10, "release.metrics", bad_encoding)
    publish(pub, 11, "release.metrics", bad_encoding)
    publish(pub, 12, "release.metrics", bad_topic)
    publish(pub, 13, "release.metrics", bad_envelope)
    publish(pub, 14, "release.metrics", bad_envelope)
    publish(pub, 15, "release.metrics", too_large)
    fates = collect(pub, 15)
    got = {seq: fate["code"] for seq, fate in fates.items()}
    assert got == {
        **dict.fromkeys(range(1, 10), "accepted"),
        8: "bad_frame",
        10: "bad_encoding",
        11: "bad_encoding",
        12: "bad_topic",
        13: "bad_envelope",
        14: "bad_envelope",
        15: "too_large",
    }
    # Answered with seq nil or 16 (collect counts a nil seq once): its own socket keeps the
    # count unambiguous.
    other = dealer(ctx, endpoint)
    other.send_multipart([header(16, version=2), b"release.metrics", accepted_envs[0]])
    assert [f["code"] for f in collect(other, 1).values()] == ["unsupported_protocol"]
    other.close()
    accepted_envs.append(accepted_envs[0])
    with_body = [
        *accepted_envs,
        bad_encoding,
        bad_encoding,
        bad_topic,
        bad_envelope,
        bad_envelope,
        too_large,
    ]
    return {
        "received": 16,
        "accepted": 8,
        "bytes_in": sum(len(b) for b in with_body),
        "bytes_accepted": sum(len(b) for b in accepted_envs),
        "bad_frame": 1,
        "unsupported_protocol": 1,
        "bad_encoding": 2,
        "bad_topic": 1,
        "bad_envelope": 2,
        "too_large": 1,
    }


@pytest.mark.timeout(30)
def test_a_scrape_after_known_traffic_shows_exactly_those_counts(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """N accepted and M rejected by code appear exactly; unused codes are present at 0."""
    pub = dealer(zctx, busd.pub_endpoint)
    expected = send_known_traffic(zctx, pub, busd.pub_endpoint)
    m = scrape_when(
        busd, lambda s: value(s, "busd_publishers_connected") == 1, "publisher connection counted"
    )
    assert value(m, "busd_messages_received_total") == expected["received"]
    assert value(m, "busd_messages_accepted_total") == expected["accepted"]
    assert value(m, "busd_received_bytes_total") == expected["bytes_in"]
    assert value(m, "busd_accepted_bytes_total") == expected["bytes_accepted"]
    for code in CODES:
        assert value(m, "busd_messages_rejected_total", code=code) == expected.get(code, 0), code
    # Every accepted message went through the latency histogram, one observation each.
    assert value(m, "busd_processing_latency_seconds_count") == expected["accepted"]
    assert value(m, "busd_processing_latency_seconds_bucket", le="+Inf") == expected["accepted"]
    assert value(m, "busd_replies_dropped_total") == 0
    assert (value(m, "busd_replies_sent_total") or 0) >= 1
    assert value(m, "busd_subscribers_connected") == 0
    assert value(m, "busd_ready") == 1
    assert value(m, "busd_draining") == 0
    assert (
        value(
            m,
            "busd_build_info",
            version="0.1.0",
            protocol="1",
            python=__import__("platform").python_version(),
            libzmq=zmq.zmq_version(),
            pyzmq=zmq.pyzmq_version(),
            msgpack=".".join(map(str, msgpack.version)),
        )
        == 1
    )
    assert value(m, "busd_task_restarts_total", task="metrics") == 0
    pub.close()
    wait_for(
        lambda: value(scrape(busd.metrics), "busd_publishers_connected") == 0,
        what="publisher disconnection counted",
    )


@pytest.mark.timeout(30)
def test_subscribers_and_subscriptions_are_counted(busd: BusdProcess, zctx: TrackedContext) -> None:
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"release.")
    sub.setsockopt(zmq.SUBSCRIBE, b"audit.")
    sub.connect(busd.sub_endpoint)
    m = scrape_when(
        busd, lambda s: value(s, "busd_active_subscriptions") == 2, "two subscriptions counted"
    )
    assert value(m, "busd_subscribers_connected") == 1
    assert value(m, "busd_subscribe_requests_total") == 2
    sub.close()
    wait_for(
        lambda: value(scrape(busd.metrics), "busd_subscribers_connected") == 0,
        what="subscriber disconnection counted",
    )


@needs_promtool
@pytest.mark.timeout(30)
def test_promtool_check_metrics_finds_no_problem_in_a_real_scrape(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext, tmp_path: Path
) -> None:
    """Every section present: traffic, rate keys, schemas, control, assertions."""
    assertions = tmp_path / "a.toml"
    assertions.write_text('[assertions.latency]\nexpr = "p99_latency_ms < 50"\n')
    busd = busd_factory(start=False, extra_args=("--assertions", str(assertions)))
    (busd.rates_dir / "publish.release.slow").write_text("0.001 1\n")
    busd.start()
    pub = dealer(zctx, busd.pub_endpoint)
    send_known_traffic(zctx, pub, busd.pub_endpoint)
    text = scrape_text(busd.metrics)
    for family in (
        "busd_rate_key_throttled_total",
        "busd_schema_messages_accepted_total",
        "busd_control_requests_total",
        "busd_assertion_ok",
        "process_cpu_seconds",
    ):
        assert f"\n{family}" in text, family
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", result.stderr
    pub.close()


@pytest.mark.timeout(20)
def test_health_endpoints_answer_and_other_requests_get_clear_errors(
    busd_each_loop: BusdProcess,
) -> None:
    busd = busd_each_loop
    assert get(busd.metrics, "/healthz")[::2] == (200, b"ok\n")
    assert get(busd.metrics, "/readyz")[::2] == (200, b"ready\n")
    status, headers, body = get(busd.metrics, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE busd_messages_received_total counter" in body
    assert get(busd.metrics, "/metrics", method="HEAD")[::2] == (200, b"")
    assert get(busd.metrics, "/nope")[0] == 404
    status, headers, _ = get(busd.metrics, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"


@pytest.mark.timeout(20)
def test_the_metrics_port_listens_on_the_configured_loopback_address_only(
    busd: BusdProcess,
) -> None:
    """Bound to 127.0.0.1, not 0.0.0.0 (prometheus-client's default would be all)."""
    port_hex = f"{busd.metrics_port:04X}"
    listening = [
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[1].endswith(":" + port_hex) and line.split()[3] == "0A"
    ]
    assert listening == ["0100007F:" + port_hex]
    v6 = Path("/proc/net/tcp6")
    if v6.exists():
        assert not [
            line
            for line in v6.read_text().splitlines()[1:]
            if line.split()[1].endswith(":" + port_hex) and line.split()[3] == "0A"
        ]


@pytest.mark.timeout(20)
def test_a_taken_metrics_port_fails_start_up_with_a_non_zero_exit(
    busd: BusdProcess, busd_factory: Callable[..., BusdProcess]
) -> None:
    second = busd_factory(start=False, name="second")
    second.metrics = busd.metrics
    with open(second.log_path, "ab") as log:
        proc = subprocess.run(
            second.argv(), stdout=log, stderr=log, cwd=second.root, timeout=15, check=False
        )
    assert proc.returncode == 69
    failed = [
        line for line in second.logs(since_start=False) if line.get("event") == "startup failed"
    ]
    assert failed and "in use" in failed[0]["error"].lower()


@pytest.mark.timeout(40)
def test_readyz_fails_while_draining(busd: BusdProcess, zctx: TrackedContext) -> None:
    """SIGTERM while a publisher streams: /readyz answers 503 'draining' until exit."""
    stop = threading.Event()
    raw = msgpack.packb(envelope("release.drain"))

    def stream() -> None:
        pub = zctx.socket(zmq.DEALER)
        pub.setsockopt(zmq.SNDTIMEO, 200)
        pub.connect(busd.pub_endpoint)
        seq = 0
        try:
            while not stop.is_set():
                seq += 1
                with contextlib.suppress(zmq.Again):
                    publish(pub, seq, "release.drain", raw)
                while pub.poll(0):
                    pub.recv()
                time.sleep(0.0005)
        finally:
            pub.close()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: (value(scrape(busd.metrics), "busd_messages_received_total") or 0) > 0,
            what="traffic flowing",
        )
        busd.signal(signal.SIGTERM)
        body = wait_for(
            lambda: (r := get(busd.metrics, "/readyz"))[0] == 503 and r[2], what="/readyz 503"
        )
        assert b"draining" in body
        assert value(scrape(busd.metrics), "busd_draining") == 1
    finally:
        stop.set()
        thread.join(5)
    assert busd.proc is not None and busd.proc.wait(15) == 0


@pytest.mark.timeout(30)
def test_throttled_and_disabled_messages_are_counted_by_code_and_by_rate_key(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    """K throttled by one key and D refused by a disabled key appear exactly, per key too;
    after the first rate_limited refusal the topic's later messages on that connection are
    refused by its fence (the same refusal, counted by code and key, and as fenced)."""
    busd = busd_factory(start=False)
    (busd.rates_dir / "publish.release.slow").write_text("0.001 1\n")
    (busd.rates_dir / "publish.release.stopped").write_text("0\n")
    busd.start()
    pub = dealer(zctx, busd.pub_endpoint)
    throttled, disabled = 6, 4
    for seq in range(1, throttled + 2):
        publish(pub, seq, "release.slow")
    for seq in range(throttled + 2, throttled + disabled + 2):
        publish(pub, seq, "release.stopped")
    fates = collect(pub, throttled + disabled + 1)
    codes = [fates[seq]["code"] for seq in sorted(fates)]
    assert codes == ["accepted"] + ["rate_limited"] * throttled + ["disabled"] * disabled
    m = scrape(busd.metrics)
    assert value(m, "busd_messages_rejected_total", code="rate_limited") == throttled
    assert value(m, "busd_messages_rejected_total", code="disabled") == disabled
    assert value(m, "busd_messages_accepted_total") == 1
    assert value(m, "busd_rate_key_throttled_total", key="publish.release.slow") == throttled
    assert value(m, "busd_order_fenced_total") == throttled - 1
    assert value(m, "busd_rate_key_disabled_total", key="publish.release.stopped") == disabled
    assert value(m, "busd_rate_key_throttled_total", key="publish.release.stopped") == 0
    assert value(m, "busd_rate_limit_messages_per_second", key="publish.release.slow") == 0.001
    assert value(m, "busd_rate_limit_messages_per_second", key="publish.release.stopped") == 0
    assert value(m, "busd_rate_throttled_total") == throttled
    assert value(m, "busd_rate_keys") == 2
    pub.close()


def test_subscribers_connecting_as_busd_binds_are_counted(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    """Connections accepted the moment busd binds (clients retrying every 10 ms, as after a
    restart) are counted: the monitors attach before the sockets can accept anything."""
    b = busd_factory(start=False)
    subs = []
    for _ in range(3):
        sub = zctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RECONNECT_IVL, 10)
        sub.connect(b.sub_endpoint)
        subs.append(sub)
    try:
        b.start()
        wait_for(
            lambda: value(scrape(b.metrics), "busd_subscribers_connected") == 3,
            timeout=5,
            what="all three subscribers counted",
        )
    finally:
        for sub in subs:
            sub.close()
