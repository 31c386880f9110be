"""busd keeps the latest accepted message per key of state schemas and serves it as a snapshot
on its state endpoint (docs/protocol.md §3.2): real busd processes, raw zmq clients."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import BusdProcess, wait_for
from opshttp import scrape, value
from stateclient import read_snapshot, request
from test_trust import ACL, Keys

from busd_client import Publisher
from busd_protocol.messages import decode_envelope
from busd_protocol.snapshots import End, Failure, Part, encode_request, sync_subscription
from busd_protocol.stamps import read_stamp

pytestmark = pytest.mark.timeout(60)

Factory = Callable[..., BusdProcess]


def state(
    app: str, n: int | str, st: str = "up", at: int = 1, version: str = "1"
) -> dict[str, Any]:
    return {
        "app": app,
        "instance_id": str(n),
        "state": st,
        "host": "h1.example",
        "version": version,
        "reported_at": at,
    }


def publish_all(busd: BusdProcess, messages: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Publish every (topic, data) as instance-state v1; all must be accepted. Their ids."""
    ids = []
    with Publisher(busd.pub_endpoint, name="reporter", timeout=20) as pub:
        for topic, data in messages:
            ids.append(pub.publish(topic, "instance-state", 1, data).id)
        assert pub.flush() == []
    return ids


def entries(parts: list[Part]) -> list[dict[str, Any]]:
    found = []
    for part in parts:
        for entry in part.entries:
            env = decode_envelope(entry.envelope)
            assert type(env) is dict
            found.append(env)
    return found


def snapshot(zctx: zmq.Context[zmq.Socket[bytes]], busd: BusdProcess, prefix: str) -> End:
    parts, end = request(zctx, busd.state_endpoint, prefix)
    assert isinstance(end, End), end
    assert end.entries == sum(len(p.entries) for p in parts)
    return end


def held(
    zctx: zmq.Context[zmq.Socket[bytes]], busd: BusdProcess, prefix: str = ""
) -> dict[str, Any]:
    parts, end = request(zctx, busd.state_endpoint, prefix)
    assert isinstance(end, End), end
    return {f"{e['data']['app']}/{e['data']['instance_id']}": e for e in entries(parts)}


def test_a_snapshot_holds_the_latest_accepted_message_per_key_as_its_original_bytes(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    messages = [("instance.web", state("web", i % 3, at=i)) for i in range(9)]
    messages.append(("instance.db", state("db", 0, at=99)))
    ids = publish_all(busd, messages)
    parts, end = request(zctx, busd.state_endpoint, "instance.")
    assert isinstance(end, End)
    got = {(e.topic, decode_envelope(e.envelope)["id"]): e for p in parts for e in p.entries}  # type: ignore[index]
    assert sorted(i for _, i in got) == sorted([ids[6], ids[7], ids[8], ids[9]])
    assert all(e.epoch == end.epoch for p in parts for e in p.entries)
    assert end.topics == {"instance.web": 9, "instance.db": 1}
    seqs = sorted(e.seq for p in parts for e in p.entries if e.topic == "instance.web")
    assert seqs == [7, 8, 9]
    assert end.entries == 4
    assert end.rules["instance-state"].key == ("app", "instance_id")
    only_db = held(zctx, busd, "instance.db")
    assert list(only_db) == ["db/0"]


def test_the_snapshot_entries_are_the_exact_bytes_a_subscriber_received(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    sub = zctx.socket(zmq.SUB)
    sub.connect(busd.sub_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"instance.")
    with Publisher(busd.pub_endpoint, name="reporter", timeout=20) as pub:

        def arrived() -> bool:
            pub.publish("instance.x", "instance-state", 1, state("x", 1)).result(5)
            return bool(sub.poll(50))

        wait_for(arrived, 10, what="the subscription")
    live: dict[int, list[bytes]] = {}
    while sub.poll(200):
        frames = sub.recv_multipart()
        stamp = read_stamp(frames[2])
        assert stamp is not None
        live[stamp[1]] = frames
    parts, end = request(zctx, busd.state_endpoint, "instance.")
    assert isinstance(end, End)
    [entry] = [e for p in parts for e in p.entries]
    assert entry.envelope == live[max(live)][1]
    assert entry.seq == max(live)
    sub.close()


def test_a_message_that_ends_its_entry_removes_the_key_and_is_counted(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    publish_all(
        busd,
        [
            ("instance.web", state("web", 1)),
            ("instance.web", state("web", 2)),
            ("instance.web", state("web", 1, "down")),
            ("instance.web", state("web", 3, "down")),  # never held: nothing to end
        ],
    )
    assert list(held(zctx, busd)) == ["web/2"]
    metrics = scrape(busd.metrics)
    assert value(metrics, "busd_state_ended_total") == 1
    assert value(metrics, "busd_state_entries") == 1


def test_an_entry_not_refreshed_within_the_schemas_ttl_is_dropped(
    busd_factory: Factory, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    b = busd_factory(start=False)
    meta_path = b.schemas_dir / "instance-state" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["state"]["ttl_s"] = 0.3
    meta_path.write_text(json.dumps(meta))
    b.start()
    publish_all(b, [("instance.web", state("web", 1)), ("instance.web", state("web", 2))])
    assert set(held(zctx, b)) <= {"web/1", "web/2"}  # maybe already expired on a slow host
    wait_for(lambda: held(zctx, b) == {}, 10, what="the entries to expire")
    wait_for(
        lambda: value(scrape(b.metrics), "busd_state_evictions_total", reason="ttl") == 2,
        5,
        what="the TTL sweep's count",
    )
    metrics = scrape(b.metrics)
    assert value(metrics, "busd_state_entries") == 0
    assert value(metrics, "busd_state_bytes") == 0


def test_at_the_count_bound_the_least_recently_updated_entries_are_evicted_and_counted(
    busd_factory: Factory, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    b = busd_factory(extra_args=("--state-max-entries", "100"))
    messages = [("instance.web", state("web", i)) for i in range(100)]
    messages.append(("instance.web", state("web", 0, at=2)))  # refreshed: now the newest
    messages += [("instance.web", state("web", i)) for i in range(100, 150)]
    publish_all(b, messages)
    assert set(held(zctx, b)) == {f"web/{i}" for i in [0, *range(51, 150)]}
    metrics = scrape(b.metrics)
    assert value(metrics, "busd_state_entries") == 100
    assert value(metrics, "busd_state_evictions_total", reason="bound") == 50


def test_at_the_byte_bound_entries_are_evicted_and_the_bytes_stay_under_it(
    busd_factory: Factory, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    b = busd_factory(extra_args=("--state-max-bytes", "10000"))
    publish_all(b, [("instance.web", state("web", i, version="v" * 60)) for i in range(200)])
    kept = held(zctx, b)
    metrics = scrape(b.metrics)
    size = value(metrics, "busd_state_bytes")
    assert size is not None and 10000 - 300 < size <= 10000
    assert value(metrics, "busd_state_evictions_total", reason="bound") == 200 - len(kept)
    assert set(kept) == {f"web/{i}" for i in range(200 - len(kept), 200)}


# -- errors ----------------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[list[bytes], str]] = [
    ([b"\xc1"], "a request is one msgpack map"),
    ([msgpack.packb([1, 2])], "a request is one msgpack map"),
    ([msgpack.packb({"op": "snapshot", "prefix": ""})], "req: expected an integer"),
    ([msgpack.packb({"op": "snapshot", "req": -1, "prefix": ""})], "req: expected an integer"),
    ([msgpack.packb({"op": "snapshot", "req": 1, "prefix": "", "x": 1})], "unknown key 'x'"),
    ([msgpack.packb({"op": "dump", "req": 1, "prefix": ""})], "op: expected 'snapshot'"),
    ([msgpack.packb({"op": "snapshot", "req": 1, "prefix": 5})], "prefix: expected a string"),
    ([msgpack.packb({"op": "snapshot", "req": 1, "prefix": "a" * 300})], "prefix: expected"),
    ([encode_request(1, "", "short")], "sync: expected 8 to 64 characters"),
    ([encode_request(1, "", "bad token!")], "sync: expected 8 to 64 characters"),
    ([encode_request(1, ""), b"more"], "a request is one frame"),
    ([msgpack.packb({"op": "snapshot", "req": 1, "prefix": "x" * 1100})], "a request is at most"),
]


def test_each_malformed_request_is_answered_bad_request_and_counted(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    dealer = zctx.socket(zmq.DEALER)
    dealer.connect(busd.state_endpoint)
    for frames, reason in BAD_REQUESTS:
        dealer.send_multipart(frames)
        assert dealer.poll(5000), reason
        reply = msgpack.unpackb(dealer.recv())
        assert reply["error"] == "bad_request", reply
        assert reply["reason"].startswith(reason), (reason, reply)
        assert reply["req"] in (None, 1)
    assert value(
        scrape(busd.metrics), "busd_snapshot_requests_total", outcome="bad_request"
    ) == len(BAD_REQUESTS)
    # busd serves on: a good request still gets its snapshot.
    dealer.send(encode_request(2, ""))
    assert dealer.poll(5000)
    assert msgpack.unpackb(dealer.recv())["end"] is True
    dealer.close()


def test_a_sync_token_never_subscribed_is_not_subscribed_and_a_request_over_the_cap_is_busy(
    busd_factory: Factory, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    b = busd_factory(extra_args=("--snapshot-max", "1"))
    parked = zctx.socket(zmq.DEALER)
    parked.connect(b.state_endpoint)
    parked.send(encode_request(1, "instance.", "never-subscribed-token"))
    wait_for(lambda: value(scrape(b.metrics), "busd_snapshots_active") == 1, 5, what="parked")
    parts, second = request(zctx, b.state_endpoint, "instance.", req=2)
    assert parts == [] and isinstance(second, Failure)
    assert (second.req, second.code) == (2, "busy")
    assert parked.poll(8000), "no answer to the parked request"
    failure = msgpack.unpackb(parked.recv())
    assert (failure["req"], failure["error"]) == (1, "not_subscribed")
    metrics = scrape(b.metrics)
    assert value(metrics, "busd_snapshot_requests_total", outcome="busy") == 1
    assert value(metrics, "busd_snapshot_requests_total", outcome="not_subscribed") == 1
    assert value(metrics, "busd_snapshots_active") == 0
    parked.close()


def test_a_parked_request_is_answered_shutting_down_when_busd_drains(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    parked = zctx.socket(zmq.DEALER)
    parked.connect(busd.state_endpoint)
    parked.send(encode_request(1, "", "never-subscribed-token"))
    wait_for(lambda: value(scrape(busd.metrics), "busd_snapshots_active") == 1, 5, what="parked")
    busd.signal(signal.SIGTERM)
    assert parked.poll(5000)
    assert msgpack.unpackb(parked.recv())["error"] == "shutting_down"
    assert busd.proc is not None and busd.proc.wait(15) == 0
    parked.close()


BLOB_META = {"topics": ["blob."], "versions": {"1": "active"}, "state": {"key": ["k"]}}
BLOB_V1 = {
    "type": "object",
    "properties": {"k": {"type": "integer"}, "pad": {"type": "string"}},
    "required": ["k", "pad"],
}


def test_a_client_that_stops_reading_has_its_snapshot_abandoned_and_busd_serves_on(
    busd_factory: Factory, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    b = busd_factory(start=False, extra_args=("--snapshot-timeout", "1", "--snapshot-part", "1"))
    (b.schemas_dir / "blob").mkdir()
    (b.schemas_dir / "blob" / "meta.json").write_text(json.dumps(BLOB_META))
    (b.schemas_dir / "blob" / "v1.json").write_text(json.dumps(BLOB_V1))
    b.start()
    with Publisher(b.pub_endpoint, name="blobs", timeout=20) as pub:
        for k in range(300):  # 18 MB: more than socket buffers and SNDHWM hold
            pub.publish("blob.x", "blob", 1, {"k": k, "pad": "p" * 60000})
        assert pub.flush() == []
    deaf = zctx.socket(zmq.DEALER)
    deaf.setsockopt(zmq.RCVHWM, 1)
    deaf.setsockopt(zmq.RCVBUF, 4096)
    deaf.connect(b.state_endpoint)
    deaf.send(encode_request(1, ""))  # and never read
    wait_for(
        lambda: value(scrape(b.metrics), "busd_snapshot_requests_total", outcome="abandoned") == 1,
        10,
        what="the abandoned count",
    )
    metrics = scrape(b.metrics)
    assert value(metrics, "busd_snapshot_requests_total", outcome="ok") == 0
    assert value(metrics, "busd_snapshots_active") == 0
    _, end = request(zctx, b.state_endpoint, "blob.")
    assert isinstance(end, End) and end.entries == 300
    deaf.close()


def test_kill_9_and_restart_start_a_new_epoch_with_an_empty_cache(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    publish_all(busd, [("instance.web", state("web", i)) for i in range(5)])
    before = snapshot(zctx, busd, "")
    assert before.entries == 5
    busd.restart()  # kill -9, then start on the same endpoints
    after = snapshot(zctx, busd, "")
    assert after.entries == 0 and after.topics == {} and after.epoch != before.epoch
    publish_all(busd, [("instance.web", state("web", 1))])
    refilled = snapshot(zctx, busd, "")
    assert (refilled.entries, refilled.topics, refilled.epoch) == (
        1,
        {"instance.web": 1},
        after.epoch,
    )


def test_a_plain_schema_keeps_no_state(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    data = {"slug": "https://apps.example/shop/releases/42", "cmd": "bin/web", "env": {}}
    with Publisher(busd.pub_endpoint, name="deployer") as pub:
        pub.publish("release.shop", "release", 1, data).result(5)
    end = snapshot(zctx, busd, "")
    assert end.entries == 0 and end.topics == {"release.shop": 1}
    assert value(scrape(busd.metrics), "busd_state_entries") == 0


def test_a_state_socket_request_frame_over_the_size_limit_only_drops_that_connection(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    big = zctx.socket(zmq.DEALER)
    big.connect(busd.state_endpoint)
    big.send(b"x" * 10000)
    assert snapshot(zctx, busd, "").entries == 0
    big.close()


def test_a_prefix_the_identity_may_not_subscribe_to_is_forbidden(
    busd_factory: Factory, tmp_path: Path, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    keys = Keys(tmp_path / "trust")
    reader = keys.client("reader")
    (tmp_path / "acl.toml").write_text(ACL)
    b = busd_factory(extra_args=keys.busd_args(tmp_path / "acl.toml"))
    for prefix, outcome in (("instance.", "forbidden"), ("", "forbidden"), ("release.", "ok")):
        _, end = request(zctx, b.state_endpoint, prefix, setup=reader.apply)
        if outcome == "ok":
            assert isinstance(end, End), end
        else:
            assert isinstance(end, Failure) and end.code == outcome, end
            assert "reader may not subscribe" in end.reason
    metrics = scrape(b.metrics)
    assert value(metrics, "busd_snapshot_requests_total", outcome="forbidden") == 2
    assert value(metrics, "busd_snapshot_requests_total", outcome="ok") == 1


def test_a_request_with_sync_waits_for_its_subscription_then_is_answered(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    publish_all(busd, [("instance.web", state("web", 1))])
    dealer = zctx.socket(zmq.DEALER)
    dealer.connect(busd.state_endpoint)
    dealer.send(encode_request(3, "instance.", "token-sent-later"))
    wait_for(lambda: value(scrape(busd.metrics), "busd_snapshots_active") == 1, 5, what="parked")
    assert not dealer.poll(100)  # parked: nothing sent before the token is seen
    sub = zctx.socket(zmq.SUB)
    sub.connect(busd.sub_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"instance.")
    sub.setsockopt(zmq.SUBSCRIBE, sync_subscription("token-sent-later"))
    parts, end = read_snapshot(dealer, 5)
    assert isinstance(end, End) and end.req == 3 and end.entries == 1
    assert len(parts) == 1 and parts[0].req == 3
    # The marker was never applied as a subscription.
    assert value(scrape(busd.metrics), "busd_active_subscriptions") == 1
    sub.close()
    dealer.close()


def test_with_schema_checks_off_a_message_without_a_usable_key_is_forwarded_but_not_held(
    busd_factory: Factory, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    b = busd_factory(extra_args=("--schema-checks", "off"))
    publish_all(
        b,
        [
            ("instance.web", {**state("web", 1), "instance_id": [1]}),  # unhashable
            ("instance.web", {**state("web", 2), "instance_id": True}),
            ("instance.web", {"app": "web"}),  # no instance_id at all
            ("instance.web", {**state("web", 3), "state": ["down"]}),  # held: ends not matched
            ("instance.web", state("web", 4)),
        ],
    )
    assert set(held(zctx, b)) == {"web/3", "web/4"}
    assert value(scrape(b.metrics), "busd_state_entries") == 2


def test_a_reload_installs_the_new_declarations_and_keeps_what_is_held(
    busd: BusdProcess, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    publish_all(busd, [("instance.web", state("web", 1))])
    meta_path = busd.schemas_dir / "instance-state" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["state"]["key"] = ["app"]  # one entry per app from now on
    meta_path.write_text(json.dumps(meta))
    busd.signal(signal.SIGHUP)
    busd.wait_log("schemas reloaded")
    publish_all(busd, [("instance.web", state("web", 2)), ("instance.web", state("web", 3))])
    parts, end = request(zctx, busd.state_endpoint, "")
    assert isinstance(end, End) and end.rules["instance-state"].key == ("app",)
    held_ids = sorted(e["data"]["instance_id"] for e in entries(parts))
    assert held_ids == ["1", "3"]  # the old key's entry stays; the new key holds the latest
