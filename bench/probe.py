"""Proof that a busd under test really checks: what it answers to three probe messages.

A valid message must be accepted, an invalid payload refused ``invalid`` (schema checks on)
and a message from the disabled publisher key (``publisher.bench-probe``, written as 0 by
``bench.servers.start_busd``) refused ``disabled`` (rate checks on). A busd that is still
warming up answers ``not_ready`` with ``retry_after_ms``: the probe waits that long and
asks again, within a bounded time. A busd whose checks cannot be proven as expected is not
measured as if they were: ``start_checked`` raises ``Unproven`` (the harness reports it as an
error and exits non-zero).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import msgpack
import zmq

from bench import message, servers
from bench.curve import CurveKeys
from bench.servers import BusdOptions, Server, Unavailable
from busd_protocol.frames import encode_header

PROBE_TIMEOUT = 10.0  # seconds a probe may take, warm-up waits included
REPLY_WAIT_MS = 1000  # per round, for the three replies
RETRY_PAUSE = 0.2  # seconds between rounds when busd is ready but a check is not yet on
NOT_READY = "not_ready"


class Unproven(Unavailable):
    """busd answered, but its checks could not be proven to be as the benchmark says."""


@dataclass(frozen=True)
class Expect:
    """The checks a busd configuration is meant to have on."""

    schema: bool = True
    rate: bool = True

    def describe(self) -> str:
        return f"schema {'on' if self.schema else 'off'}, rate limit {'on' if self.rate else 'off'}"


@dataclass(frozen=True)
class Probe:
    """What one probe found. ``codes``: the last answer to each case (``valid``,
    ``schema``, ``rate``); ``waited_ms``: time spent waiting out ``not_ready``."""

    schema_checks: bool
    rate_checks: bool
    valid_accepted: bool
    codes: dict[str, str] = field(default_factory=dict)
    rounds: int = 0
    waited_ms: int = 0
    gave_up: str = ""  # why the probe stopped before proving anything, or ""
    batch: int = 0  # the ``batch`` busd's replies advertise (most messages per batch); 0: none

    def proves(self, expect: Expect) -> bool:
        return (
            self.valid_accepted
            and self.schema_checks == expect.schema
            and self.rate_checks == expect.rate
        )

    def why_not(self, expect: Expect) -> str:
        """Why this probe does not prove ``expect`` (empty when it does)."""
        if self.proves(expect):
            return ""
        found = Expect(self.schema_checks, self.rate_checks).describe()
        why = self.gave_up or (
            "a valid message was not accepted"
            if not self.valid_accepted
            else f"expected {expect.describe()}, found {found}"
        )
        return f"checks not proven ({why}; answers {self.codes}, {self.rounds} round(s))"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cases() -> dict[str, tuple[str, bytes]]:
    """Each case's publisher name and envelope."""
    bad = dict(message.DATA, env={"RACK_ENV": 5})
    return {
        "valid": (message.PUBLISHER, message.Envelopes().encode(message.TOPIC)),
        "schema": (message.PUBLISHER, message.Envelopes().encode(message.TOPIC, bad)),
        "rate": (
            message.PROBE_PUBLISHER,
            message.Envelopes(message.PROBE_PUBLISHER).encode(message.TOPIC),
        ),
    }


def _round(
    socks: dict[str, zmq.Socket[bytes]], first_seq: int, deadline: float
) -> tuple[dict[str, str], int, int]:
    """Send the three cases (seqs from ``first_seq``), each on its publisher's socket; their
    codes, the longest ``retry_after_ms`` among ``not_ready`` answers and the largest
    ``batch`` a reply advertised (docs/protocol.md §2; 0 when none did)."""
    by_seq: dict[int, str] = {}
    for i, (case, (publisher, body)) in enumerate(_cases().items()):
        by_seq[first_seq + i] = case
        socks[publisher].send_multipart(
            [encode_header(first_seq + i), message.TOPIC.encode(), body]
        )
    poller = zmq.Poller()
    for sock in set(socks.values()):
        poller.register(sock, zmq.POLLIN)
    codes: dict[str, str] = {}
    retry_ms = batch = 0
    while by_seq:
        wait = min(REPLY_WAIT_MS, max(1, int((deadline - time.monotonic()) * 1000)))
        ready = poller.poll(wait)
        if not ready:
            break
        for sock, _ in ready:
            reply = msgpack.unpackb(sock.recv())
            advertised = reply.get("batch")
            if isinstance(advertised, int) and not isinstance(advertised, bool):
                batch = max(batch, advertised)
            for lo, hi in reply["acc"]:
                for s in range(lo, hi + 1):
                    if s in by_seq:
                        codes[by_seq.pop(s)] = "accepted"
            for rej in reply["rej"]:
                if rej["seq"] in by_seq:
                    codes[by_seq.pop(rej["seq"])] = rej["code"]
                    if rej["code"] == NOT_READY:
                        retry_ms = max(retry_ms, int(rej.get("retry_after_ms", 0)))
    for case in by_seq.values():
        codes[case] = "no answer"
    return codes, retry_ms, batch


def _sockets(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, keys: CurveKeys | None
) -> dict[str, zmq.Socket[bytes]]:
    """A DEALER per publisher name: with CURVE each speaks as its own key (busd binds the
    envelope's publisher to it); without, one socket serves both names."""
    socks: dict[str, zmq.Socket[bytes]] = {}
    for name in (message.PUBLISHER, message.PROBE_PUBLISHER):
        if keys is None and socks:
            socks[name] = next(iter(socks.values()))
            continue
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            from busd_client.keys import ClientKeys

            ClientKeys.load(keys.client_secret(name), keys.server_public).apply(sock)
        sock.connect(endpoint)
        socks[name] = sock
    return socks


ALL_ON = Expect()
DEFAULT_OPTIONS = BusdOptions()


def probe_busd(
    server: Server,
    expect: Expect = ALL_ON,
    timeout: float = PROBE_TIMEOUT,
    keys: CurveKeys | None = None,
) -> Probe:
    """Probe ``server`` until its answers prove ``expect`` or ``timeout`` seconds pass.

    ``not_ready`` (warm-up): wait ``retry_after_ms`` and ask again, or give up at once when
    that would pass the deadline. Ready but a check not as expected: ask again every 0.2 s
    (busd's rates directory is read by a watcher shortly after start).
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks = _sockets(ctx, server.pub_endpoint, keys)
    started = time.monotonic()
    deadline = started + timeout
    codes: dict[str, str] = {}
    rounds = waited_ms = batch = 0
    gave_up = ""
    try:
        while True:
            codes, retry_ms, advertised = _round(socks, 1 + 3 * rounds, deadline)
            batch = max(batch, advertised)
            rounds += 1
            probe = Probe(
                codes.get("schema") == "invalid",
                codes.get("rate") == "disabled",
                codes.get("valid") == "accepted",
                codes,
                rounds,
                waited_ms,
                batch=batch,
            )
            if probe.proves(expect):
                return probe
            left = deadline - time.monotonic()
            if NOT_READY in codes.values():
                pause = max(retry_ms, 10) / 1000
                if pause > left:
                    gave_up = (
                        f"busd is warming up for {retry_ms} ms more, past the probe's {timeout:g} s"
                    )
                    break
                time.sleep(pause)
                waited_ms += round(pause * 1000)
                continue
            if left <= RETRY_PAUSE:
                gave_up = "" if "no answer" not in codes.values() else "no answer in time"
                break
            time.sleep(RETRY_PAUSE)
    finally:
        for sock in set(socks.values()):
            sock.close(linger=0)
        ctx.term()
    return Probe(
        codes.get("schema") == "invalid",
        codes.get("rate") == "disabled",
        codes.get("valid") == "accepted",
        codes,
        rounds,
        waited_ms,
        gave_up,
        batch,
    )


def start_checked(
    name: str,
    opts: BusdOptions = DEFAULT_OPTIONS,
    expect: Expect = ALL_ON,
    timeout: float = PROBE_TIMEOUT,
    keys: CurveKeys | None = None,
) -> Server:
    """A busd whose checks are proven to be ``expect``; ``Unproven`` (server stopped) if
    they cannot be. The probe's findings are in ``server.notes["checks"]``. ``keys``: busd
    runs with CURVE authentication (their flags are added) and the probe speaks CURVE."""
    if keys is not None:
        opts = replace(opts, extra=opts.extra + keys.busd_flags())
    server = servers.start_busd(opts, name=name)
    _prove(server, expect, timeout, keys)
    return server


def _prove(server: Server, expect: Expect, timeout: float, keys: CurveKeys | None) -> None:
    probe = probe_busd(server, expect, timeout, keys)
    server.notes["checks"] = probe.as_dict()
    server.notes["expected_checks"] = asdict(expect)
    if not probe.proves(expect):
        server.stop()
        raise Unproven(f"{server.name}: {probe.why_not(expect)}")


def start_checked_all(
    names: list[str],
    opts: BusdOptions = DEFAULT_OPTIONS,
    expect: Expect = ALL_ON,
    timeout: float = PROBE_TIMEOUT,
) -> list[Server]:
    """Like ``start_checked`` for several busd at once: all started, then each proven (their
    warm-ups overlap); on ``Unproven`` every one of them is stopped."""
    started: list[Server] = []
    try:
        for name in names:
            started.append(servers.start_busd(opts, name=name))
        for server in started:
            _prove(server, expect, timeout, None)
    except Unavailable:
        for server in started:
            server.stop()
        raise
    return started
