"""busd_client.state_core and state_table: what the state view concludes from the snapshot
replies and live messages it is fed (the wire frames of docs/protocol.md "State snapshots").

The core is pure (no sockets, time passed in); tests/test_state_view.py runs it against real
busd processes.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from busd_client.state_core import Link, StateCore
from busd_client.state_table import StateChange
from busd_protocol.messages import encode_envelope
from busd_protocol.snapshots import SYNC_PREFIX
from busd_protocol.stamps import encode_stamp

pytestmark = pytest.mark.timeout(10)
E, E2 = 0xE1, 0xE2
RULES = {
    "instance-state": {
        "key": ["app", "instance_id"],
        "ttl_s": 60,
        "ends": {"field": "state", "values": ["down"]},
        "order": "reported_at",
    }
}
NOW, WALL = 100.0, 1_800_000_000.0
_ids = iter(range(1, 1_000_000))


def envelope(instance: str, state: str, at: int, id: str | None = None) -> tuple[bytes, bytes]:
    topic = f"instance.shop.{instance}"
    data = {
        "app": "shop",
        "instance_id": instance,
        "state": state,
        "host": "h1.example",
        "version": "42",
        "reported_at": at,
    }
    env = encode_envelope(
        topic,
        "instance-state",
        1,
        data,
        id=id or f"id{next(_ids)}",
        publisher="p",
        ts=int(WALL * 1e9),
    )
    return topic.encode(), env


def live(topic_env: tuple[bytes, bytes], epoch: int, seq: int) -> list[bytes]:
    return [*topic_env, encode_stamp(epoch, seq)]


def part(req: int, index: int, *entries: tuple[tuple[bytes, bytes], int, int]) -> list[bytes]:
    frames = [msgpack.packb({"req": req, "part": index})]
    for (topic, env), epoch, seq in entries:
        frames += [topic, env, encode_stamp(epoch, seq)]
    return frames


def end(req: int, epoch: int, entries: int, topics: dict[str, int]) -> list[bytes]:
    head = {
        "req": req,
        "end": True,
        "epoch": epoch,
        "entries": entries,
        "topics": topics,
        "rules": RULES,
    }
    return [msgpack.packb(head)]


def connected(core: StateCore, link: Link) -> None:
    core.on_dealer(link, True, NOW, WALL)
    core.on_sub(link, True, NOW, WALL)
    core.tick(NOW, WALL)


def started(core: StateCore, link: Link) -> dict[str, Any]:
    """The request the core sent, after checking it subscribed its token first."""
    kinds = [(kind, lnk) for kind, lnk, _ in core.outbox]
    assert ("subscribe", link) in kinds and ("request", link) in kinds
    frames = {kind: payload for kind, lnk, payload in core.outbox if lnk is link}
    others = [action for action in core.outbox if action[1] is not link]
    core.outbox.clear()
    core.outbox.extend(others)
    request: dict[str, Any] = msgpack.unpackb(frames["request"])
    assert frames["subscribe"] == SYNC_PREFIX + request["sync"].encode()
    return request


def kinds(changes: list[StateChange]) -> list[tuple[str, Any]]:
    return [(c.kind, c.key[2] if c.key else c.detail) for c in changes]


def state_of(core: StateCore) -> dict[str, str]:
    return {str(k[2]): e.data["state"] for k, e in core.table.entries.items()}


def test_a_live_message_covered_by_the_cut_is_dropped_and_a_later_one_applied() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    a1, b1 = envelope("a", "up", 1), envelope("b", "up", 1)
    # Live before the cut (seq 1, covered), and after it (seq 2), buffered meanwhile.
    core.on_live(link, live(a1, E, 1), NOW, WALL)
    core.on_live(link, live(envelope("a", "idle", 2), E, 2), NOW, WALL)
    core.on_reply(link, part(req, 0, (a1, E, 1), (b1, E, 1)), NOW, WALL)
    core.on_reply(link, end(req, E, 2, {"instance.shop.a": 1, "instance.shop.b": 1}), NOW, WALL)
    changes = core.take_changes()
    assert kinds(changes) == [
        ("added", "a"),
        ("added", "b"),
        ("updated", "a"),
        ("synced", "2 entries"),
    ]
    assert state_of(core) == {"a": "idle", "b": "up"}
    assert link.phase == "live"
    assert [kind for kind, _, _ in core.outbox] == ["unsubscribe"]


def test_an_ends_message_removes_the_key_and_a_late_covered_copy_changes_nothing() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    a1 = envelope("a", "up", 1)
    core.on_reply(link, part(req, 0, (a1, E, 3)), NOW, WALL)
    core.on_reply(link, end(req, E, 1, {"instance.shop.a": 3}), NOW, WALL)
    core.take_changes()
    # A copy of seq 2 (before the cut) comes late on the live stream: dropped.
    core.on_live(link, live(envelope("a", "down", 0), E, 2), NOW, WALL)
    assert state_of(core) == {"a": "up"}
    core.on_live(link, live(envelope("a", "down", 5), E, 4), NOW, WALL)
    assert kinds(core.take_changes()) == [("removed", "a")]
    assert state_of(core) == {}


def test_a_jump_in_the_live_numbers_is_lost_messages_and_the_view_snapshots_again() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    core.on_reply(link, end(req, E, 0, {"instance.shop.a": 3}), NOW, WALL)
    core.on_live(link, live(envelope("a", "up", 9), E, 6), NOW, WALL)
    changes = core.take_changes()
    assert kinds(changes)[-2:] == [("lost", "2 message(s) of instance.shop.a"), ("added", "a")]
    assert link.phase == "waiting"
    core.tick(NOW + 1, WALL)
    assert started(core, link)["req"] == req + 1


def test_a_new_epoch_is_a_restart_reported_once_and_entries_are_kept_until_refreshed() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    a, b = envelope("a", "up", 1), envelope("b", "up", 1)
    core.on_reply(link, part(req, 0, (a, E, 1), (b, E, 1)), NOW, WALL)
    core.on_reply(link, end(req, E, 2, {}), NOW, WALL)
    core.take_changes()
    a2 = envelope("a", "idle", 2)
    core.on_live(link, live(a2, E2, 1), NOW, WALL)  # busd restarted
    changes = core.take_changes()
    assert [c.kind for c in changes] == ["restarted", "updated"]
    assert link.phase == "waiting"
    core.tick(NOW, WALL)
    req = started(core, link)["req"]
    core.on_reply(link, part(req, 0, (a2, E2, 1)), NOW, WALL)  # what it applied live
    core.on_reply(link, end(req, E2, 1, {"instance.shop.a": 1}), NOW, WALL)
    assert [c.kind for c in core.take_changes()] == ["synced"]
    assert core.table.duplicates == 1
    assert state_of(core) == {"a": "idle", "b": "up"}  # b kept: the new busd knows nothing


def test_a_key_gone_from_the_same_epochs_snapshot_is_removed() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    core.on_reply(link, part(req, 0, (envelope("a", "up", 1), E, 1)), NOW, WALL)
    core.on_reply(link, end(req, E, 1, {"instance.shop.a": 1}), NOW, WALL)
    core.on_sub(link, False, NOW, WALL)  # the live stream broke: messages may be lost
    core.on_sub(link, True, NOW, WALL)
    core.take_changes()
    core.tick(NOW, WALL)
    req = started(core, link)["req"]
    core.on_reply(link, end(req, E, 0, {"instance.shop.a": 2}), NOW, WALL)
    changes = core.take_changes()
    assert kinds(changes)[0] == ("removed", "a") and changes[0].detail == "not in the snapshot"


def test_a_snapshot_failed_by_a_lost_connection_applies_what_was_buffered_and_retries() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    core.on_reply(link, end(req, E, 0, {}), NOW, WALL)
    core.on_sub(link, False, NOW, WALL)
    core.on_sub(link, True, NOW, WALL)
    core.tick(NOW, WALL)
    req = started(core, link)["req"]
    core.on_live(link, live(envelope("a", "up", 1), E, 1), NOW, WALL)
    core.on_dealer(link, False, NOW, WALL)
    changes = core.take_changes()
    assert [c.kind for c in changes][-2:] == ["failed", "added"]
    assert link.phase == "waiting" and link.error.startswith("lost the connection")


def test_a_renewed_egress_connection_voids_the_attempt() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    core.on_sub(link, False, NOW, WALL)  # the token may have reached busd before the prefix
    core.on_sub(link, True, NOW, WALL)
    core.on_reply(link, end(req, E, 0, {}), NOW, WALL)  # an answer to the failed attempt
    assert core.stale_replies == 1 and link.snapshots == 0
    core.tick(NOW, WALL)
    assert started(core, link)["req"] == req + 1


def test_ttl_expires_an_entry_not_refreshed() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    core.on_reply(link, end(req, E, 0, {}), NOW, WALL)
    core.on_live(link, live(envelope("a", "up", 1), E, 1), NOW, WALL)
    core.take_changes()
    assert core.next_deadline() == pytest.approx(NOW + 60)
    core.tick(NOW + 59, WALL + 59)
    assert core.take_changes() == []
    core.tick(NOW + 60, WALL + 60)
    assert kinds(core.take_changes()) == [("expired", "a")]


def test_a_pool_keeps_the_newest_by_the_order_field_and_an_end_is_not_undone() -> None:
    core = StateCore("instance.", ["b1", "b2"])
    one, two = core.links
    for link in core.links:
        connected(core, link)
    r1, r2 = started(core, one)["req"], started(core, two)["req"]
    core.on_reply(one, part(r1, 0, (envelope("a", "up", 5), E, 1)), NOW, WALL)
    core.on_reply(one, end(r1, E, 1, {}), NOW, WALL)
    core.on_live(one, live(envelope("b", "down", 9), E, 2), NOW, WALL)  # b ended at 9
    core.on_live(one, live(envelope("a", "idle", 7), E, 3), NOW, WALL)
    # broker two still has an older a and the b before its end
    entries = [(envelope("a", "crashed", 6), E2, 1), (envelope("b", "up", 8), E2, 1)]
    core.on_reply(two, part(r2, 0, *entries), NOW, WALL)
    core.on_reply(two, end(r2, E2, 2, {}), NOW, WALL)
    assert state_of(core) == {"a": "idle"}
    assert core.table.stale == 2
    same = envelope(
        "a", "idle", 7, id=core.table.entries[("instance-state", "shop", "a")].message.id
    )
    core.on_live(two, live(same, E2, 2), NOW, WALL)  # the same message through the other broker
    assert core.table.duplicates == 1 and core.synced


def test_an_error_answer_fails_the_attempt_with_its_code() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    core.on_reply(
        link, [msgpack.packb({"req": req, "error": "forbidden", "reason": "no"})], NOW, WALL
    )
    assert link.error == "busd answered forbidden: no" and link.retry_at == NOW + 5.0
    core.on_reply(link, [b"\xc1"], NOW, WALL)
    assert core.bad == 1


def test_a_late_copy_numbered_1_is_told_from_a_topic_busd_forgot_by_the_entrys_stamp() -> None:
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    core.on_reply(link, part(req, 0, (envelope("a", "up", 3), E, 3)), NOW, WALL)
    core.on_reply(link, end(req, E, 1, {"instance.shop.a": 3}), NOW, WALL)
    core.take_changes()
    # seq 1 of the topic, from before the cut: an old copy, not a reset (the entry is young)
    core.on_live(link, live(envelope("a", "crashed", 1), E, 1), NOW, WALL)
    assert state_of(core) == {"a": "up"} and core.table.stale == 1
    # The same number long after the entry: busd forgot the idle topic and started again.
    later = WALL + 900
    core.on_live(link, live(envelope("a", "idle", 9), E, 1), NOW + 900, later)
    assert state_of(core) == {"a": "idle"}


def test_a_second_snapshot_applies_its_parts_as_they_come_and_never_an_older_epoch_over_them() -> (
    None
):
    core = StateCore("instance.", ["b1"])
    link = core.links[0]
    connected(core, link)
    req = started(core, link)["req"]
    core.on_reply(link, part(req, 0, (envelope("a", "up", 1), E, 1)), NOW, WALL)
    assert core.take_changes() == []  # the first snapshot: no rules before its end
    core.on_reply(link, end(req, E, 1, {"instance.shop.a": 1}), NOW, WALL)
    core.take_changes()
    core.on_sub(link, False, NOW, WALL)  # busd restarts meanwhile
    core.on_sub(link, True, NOW, WALL)
    assert kinds(core.take_changes()) == [("lost", "connection lost")]
    core.tick(NOW, WALL)
    req = started(core, link)["req"]
    core.on_live(link, live(envelope("a", "crashed", 2), E, 2), NOW, WALL)  # the old busd's
    core.on_reply(link, part(req, 0, (envelope("a", "idle", 3), E2, 1)), NOW, WALL)
    assert kinds(core.take_changes()) == [("updated", "a")]  # before the end
    core.on_reply(link, end(req, E2, 1, {"instance.shop.a": 1}), NOW, WALL)
    assert [c.kind for c in core.take_changes()] == ["restarted", "synced"]
    assert state_of(core) == {"a": "idle"}
