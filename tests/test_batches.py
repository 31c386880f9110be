"""Batches on the wire (docs/protocol.md §1, §2), spoken by a raw ZeroMQ client written from
the document: 1 + 2K frames, consecutive seqs, each message judged, forwarded and answered on
its own, ``batch`` in every reply, and each malformed shape refused with its rule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import BusdProcess, TrackedContext, wait_for
from inproc import app_config, serving
from rawproto import (
    collect,
    dealer,
    envelope,
    header,
    publish,
    publish_batch,
    replies,
    subscriber,
    wait_subscribed,
)

from busd.app import App
from busd.transport import ingress
from busd_client.control import ControlClient
from busd_client.keys import ClientKeys, new_key_pair
from busd_protocol.frames import MAX_SEQ

pytestmark = pytest.mark.timeout(30)


def _broker(busd: BusdProcess) -> dict[str, object]:
    with ControlClient(busd.control, timeout=5.0) as control:
        stats: dict[str, object] = control.call("stats")["stats"]["broker"]
    return stats


def test_each_message_of_a_batch_gets_its_own_verdict_under_its_own_seq(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """A batch mixing accepted and refused messages: every seq is answered once, with the
    code its message alone earns; accepted seqs compress into ranges around the refusals."""
    pub = dealer(zctx, busd.pub_endpoint)
    bad_data = envelope("release.shop", data={"cmd": 1})
    publish_batch(
        pub,
        10,
        [
            ("release.shop", envelope("release.shop", id="a")),
            ("release.shop", envelope("release.shop", id="b")),
            ("release.shop", b"\xc1"),
            ("release.shop", bad_data),
            ("release shop", envelope("release shop")),
            ("release.shop", envelope("release.shop", id="f")),
        ],
    )
    reply = replies(pub)
    assert reply["acc"] == [[10, 11], [15, 15]]
    assert [(r["seq"], r["code"]) for r in reply["rej"]] == [
        (12, "bad_encoding"),
        (13, "invalid"),
        (14, "bad_topic"),
    ]
    assert reply["batch"] == 1000
    broker = _broker(busd)
    assert broker["received"] == 6 and broker["accepted"] == 3
    pub.close()


def test_subscribers_get_a_batch_in_order_as_the_publisher_sent_each_envelope(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """Each accepted message of a batch is delivered as [topic, its own envelope bytes,
    stamp], in publish order, each topic numbered on its own; a refused one is skipped."""
    sub = subscriber(zctx, busd.sub_endpoint, "release.")
    wait_subscribed(zctx, busd.pub_endpoint, sub, "release.probe")
    pub = dealer(zctx, busd.pub_endpoint)
    messages: list[tuple[str, dict[str, object] | bytes]] = [
        ("release.a", envelope("release.a", id="a1")),
        ("release.b", envelope("release.b", id="b1")),
        ("release.a", envelope("release.a", id="a2", data={"cmd": 1})),  # invalid
        ("release.a", envelope("release.a", id="a3")),
        ("release.b", envelope("release.b", id="b2")),
        ("release.a", envelope("release.a", id="a4")),
    ]
    sent = publish_batch(pub, 1, messages)
    fates = collect(pub, len(messages))
    assert [fates[s]["code"] for s in range(1, 7)] == ["accepted"] * 2 + ["invalid"] + [
        "accepted"
    ] * 3
    got = []
    for _ in range(5):
        assert sub.poll(5000), f"only {len(got)} of 5 delivered"
        got.append(sub.recv_multipart())
    assert [(t, e) for t, e, _ in got] == [
        (messages[i][0].encode(), sent[i]) for i in (0, 1, 3, 4, 5)
    ]
    stamps = [int.from_bytes(s[8:], "big") for _, _, s in got]
    assert stamps == [1, 1, 2, 2, 3]  # release.a: 1, 2, 3; release.b: 1, 2
    assert len({s[:8] for _, _, s in got}) == 1  # one epoch
    assert not sub.poll(100)  # the invalid one was not forwarded
    pub.close()
    sub.close()


def test_every_reply_announces_the_configured_batch_size(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    """``batch`` is in replies to single messages, to refusals and to batches alike."""
    busd = busd_factory(extra_args=("--max-batch", "7"))
    pub = dealer(zctx, busd.pub_endpoint)
    publish(pub, 1)
    assert replies(pub) == {"acc": [[1, 1]], "rej": [], "batch": 7}
    pub.send_multipart([b"junk"])
    assert replies(pub)["batch"] == 7
    publish_batch(pub, 2, [("release.shop", envelope())] * 7)
    assert replies(pub) == {"acc": [[2, 8]], "rej": [], "batch": 7}
    pub.close()


def test_a_batch_ending_with_a_topic_and_no_envelope_is_judged_up_to_it(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """An even frame count: the complete pairs are judged as usual, the seq the lone topic
    would have had is bad_frame."""
    pub = dealer(zctx, busd.pub_endpoint)
    env = msgpack.packb(envelope())
    pub.send_multipart([header(5), b"release.shop", env, b"release.shop", env, b"release.shop"])
    reply = replies(pub)
    assert reply["acc"] == [[5, 6]]
    [rej] = reply["rej"]
    assert (rej["seq"], rej["code"]) == (7, "bad_frame")
    assert rej["reason"] == "batch ends with a topic and no envelope"
    busd.wait_log("message rejected", code="bad_frame", seq=7)
    pub.close()


@pytest.mark.parametrize("frame_slice", [4096, 3], ids=["in one wake-up", "over several"])
def test_a_batch_over_max_batch_is_refused_for_every_seq_it_could_have_meant(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext, frame_slice: int
) -> None:
    """More than 1 + 2 * max_batch frames: nothing is judged or forwarded, seq .. seq +
    max_batch - 1 are bad_frame, the frames are discarded, and the socket publishes on."""
    busd = busd_factory(extra_args=("--max-batch", "3", "--frame-slice", str(frame_slice)))
    pub = dealer(zctx, busd.pub_endpoint)
    env = msgpack.packb(envelope())
    pub.send_multipart([header(20)] + [b"release.shop", env] * 4 + [b"x"] * 10)
    reply = replies(pub)
    assert reply["acc"] == []
    assert [(r["seq"], r["code"]) for r in reply["rej"]] == [(s, "bad_frame") for s in (20, 21, 22)]
    assert reply["rej"][0]["reason"] == "a batch holds at most 3 messages (7 frames), got 19 frames"
    broker = _broker(busd)
    assert broker["accepted"] == 0 and broker["frames_discarded"] == 12
    assert broker["overlong_messages"] == (0 if frame_slice > 12 else 1)
    publish(pub, 23)
    assert collect(pub, 1)[23]["code"] == "accepted"
    pub.close()


def test_a_batch_whose_seqs_would_pass_2_to_the_64_is_refused_whole(
    busd: BusdProcess, zctx: TrackedContext
) -> None:
    """seq + K - 1 must fit in 64 bits: the batch that would pass it is one bad_frame under
    its first seq; one that ends exactly at 2^64 - 1 is accepted."""
    pub = dealer(zctx, busd.pub_endpoint)
    top = (1 << 64) - 1
    publish_batch(pub, top - 1, [("release.shop", envelope())] * 3)
    reply = replies(pub)
    assert reply["acc"] == []
    assert [(r["seq"], r["code"]) for r in reply["rej"]] == [(top - 1, "bad_frame")]
    publish_batch(pub, top - 1, [("release.shop", envelope())] * 2)
    assert replies(pub)["acc"] == [[top - 1, top]]
    pub.close()


def test_a_batch_during_warm_up_is_refused_message_by_message(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    """The broker's state applies per message: every seq of the batch is not_ready."""
    busd = busd_factory(extra_args=("--warmup", "60"))
    pub = dealer(zctx, busd.pub_endpoint)
    publish_batch(pub, 1, [("release.shop", envelope())] * 3)
    fates = collect(pub, 3)
    assert {s: f["code"] for s, f in fates.items()} == {s: "not_ready" for s in (1, 2, 3)}
    assert all(f["retry_after_ms"] > 0 for f in fates.values())
    pub.close()


def test_rate_limits_and_fences_apply_per_message_inside_a_batch(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext
) -> None:
    """A bucket of 2 takes the first two messages of a batch and refuses the third, which
    fences its topic at once: the fourth, in the same batch, is held back by that fence; in
    the next batch a later message of the topic still is, though tokens are back, another
    topic is not, and the refused one, resent, is accepted and lifts the fence."""
    busd = busd_factory(start=False)
    (busd.rates_dir / "publish.release.rl").write_text("1000 2\n")
    busd.start()
    pub = dealer(zctx, busd.pub_endpoint)
    a = [envelope("release.rl", id=f"a{i}") for i in range(7)]
    other = envelope("release.other", id="o1")
    sent = publish_batch(pub, 1, [("release.rl", a[i]) for i in (1, 2, 3, 4)])
    first = collect(pub, 4)
    codes = [first[s]["code"] for s in (1, 2, 3, 4)]
    assert codes == ["accepted", "accepted", "rate_limited", "rate_limited"]
    refusal = first[3]
    assert refusal["key"] == "publish.release.rl"
    assert _broker(busd)["fenced"] == 1  # seq 4: held back by seq 3's fence
    wait_until = time.monotonic() + refusal["retry_after_ms"] / 1000 + 0.005
    wait_for(lambda: time.monotonic() > wait_until, timeout=2, what="a token back")
    publish_batch(
        pub,
        5,
        [
            ("release.rl", a[5]),
            ("release.other", other),
            ("release.rl", sent[2]),
            ("release.rl", a[6]),
        ],
    )
    second = collect(pub, 4)
    assert second[5]["code"] == "rate_limited"  # fenced: the same refusal as seq 3
    assert (second[5]["key"], second[5]["retry_after_ms"]) == (
        "publish.release.rl",
        refusal["retry_after_ms"],
    )
    assert [second[s]["code"] for s in (6, 7, 8)] == ["accepted"] * 3
    assert _broker(busd)["fenced"] == 2
    pub.close()


def test_permissions_apply_per_message_inside_a_batch(
    busd_factory: Callable[..., BusdProcess], zctx: TrackedContext, tmp_path: Path
) -> None:
    """With authentication on, each message of a batch is judged for the connection's
    identity: outside its topics, or under another publisher name, is forbidden."""
    server_public, server_secret = new_key_pair(tmp_path / "server", "server")
    public, secret = new_key_pair(tmp_path / "clients", "deployer")
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / public.name).write_bytes(public.read_bytes())
    acl = tmp_path / "acl.toml"
    acl.write_text('[identities.deployer]\npublish = ["release."]\n')
    busd = busd_factory(
        extra_args=(
            "--curve-secret",
            str(server_secret),
            "--keys-dir",
            str(keys_dir),
            "--acl",
            str(acl),
        )
    )
    keys = ClientKeys.load(secret, server_public)
    pub = zctx.socket(zmq.DEALER)
    pub.setsockopt(zmq.LINGER, 0)
    pub.curve_publickey, pub.curve_secretkey, pub.curve_serverkey = (
        keys.public,
        keys.secret,
        keys.server,
    )
    pub.connect(busd.pub_endpoint)
    publish_batch(
        pub,
        1,
        [
            ("release.shop", envelope("release.shop", publisher="deployer")),
            ("orders.shop", envelope("orders.shop", publisher="deployer")),
            ("release.shop", envelope("release.shop", publisher="someone-else")),
            ("release.eu", envelope("release.eu", publisher="deployer")),
        ],
    )
    fates = collect(pub, 4)
    assert [fates[s]["code"] for s in (1, 2, 3, 4)] == [
        "accepted",
        "forbidden",
        "forbidden",
        "accepted",
    ]
    pub.close()


@pytest.mark.parametrize(
    ("seq", "frames", "expected"),
    [
        (5, 0, (5, 0, ingress.HEADER_ONLY)),
        (5, 1, (5, 0, ingress.NO_ENVELOPE)),
        (5, 2, (5, 1, None)),
        (5, 3, (5, 1, ingress.NO_ENVELOPE)),
        (5, 2000, (5, 1000, None)),
        (MAX_SEQ, 2, (MAX_SEQ, 1, None)),
        (MAX_SEQ, 1, (MAX_SEQ, 0, ingress.NO_ENVELOPE)),
        (MAX_SEQ, 3, (MAX_SEQ, 0, ingress.PAST_MAX_SEQ)),
        (MAX_SEQ - 1, 4, (MAX_SEQ - 1, 2, None)),
        (MAX_SEQ - 1, 6, (MAX_SEQ - 1, 0, ingress.PAST_MAX_SEQ)),
    ],
)
def test_the_shape_of_a_publish_is_its_first_seq_its_messages_and_a_refused_seq(
    seq: int, frames: int, expected: ingress.Shape
) -> None:
    """``ingress.shape`` from a good header and the number of frames after it."""
    assert ingress.shape(header(seq), frames) == expected


def test_an_unreadable_header_gives_no_messages_whatever_follows() -> None:
    seq, count, refusal = ingress.shape(b"B\x01\x00", 4)
    assert (seq, count) == (None, 0) and refusal is not None and refusal.code == "bad_frame"
    seq, count, refusal = ingress.shape(header(9, version=2), 4)
    assert (seq, count) == (9, 0) and refusal is not None
    assert refusal.code == "unsupported_protocol"


@pytest.mark.timeout(30)
async def test_a_batch_still_queued_when_the_drain_ends_is_answered_shutting_down_per_message(
    tmp_path: Path, zctx: TrackedContext
) -> None:
    """The real App with no drain time: a batch already in busd's queue when it is told to
    shut down is answered shutting_down, message by message, each under its own seq."""
    app = App(app_config(tmp_path, drain_timeout=0.0))
    async with serving(app):
        pub = dealer(zctx, app.broker.pub_endpoint)
        publish(pub, 1)
        assert (await asyncio.to_thread(collect, pub, 1))[1]["code"] == "accepted"
        publish_batch(pub, 2, [("release.shop", envelope())] * 3)
        # The loop is not yielded to before the batch is in busd's queue (libzmq's I/O
        # thread puts it there), so the broker cannot judge it before the drain.
        router = app.broker._router
        assert router is not None and router.poll(5000), "the batch never reached busd"
        app.begin_drain()
        reply = await asyncio.to_thread(replies, pub)
        pub.close()
    assert reply["acc"] == [] and reply["draining"] is True
    assert [(r["seq"], r["code"]) for r in reply["rej"]] == [
        (s, "shutting_down") for s in (2, 3, 4)
    ]
