"""StateView and AsyncStateView against real busd processes: snapshot then live with no
update lost or applied twice, TTL, a restart, and a pool with a broker killed during its
snapshot (docs/client.md "State: snapshot then live")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import BusdProcess, wait_for
from statefeed import PREFIX, SCHEMA, Feeder, key, load, payload, topic

from busd_client import Publisher
from busd_client.aio_state import AsyncStateView
from busd_client.state_table import StateChange
from busd_client.state_view import StateView

# The figure: 100,000 instances in busd (the load takes ~4 s, the view's snapshot
# ~3-6 s on 2 shared cores), updated at 1,000 messages/s while the view starts.
INSTANCES = 100_000
RATE = 1000.0


def view_of(busd: BusdProcess, **kwargs: Any) -> StateView:
    return StateView(
        PREFIX, state_endpoint=busd.state_endpoint, sub_endpoint=busd.sub_endpoint, **kwargs
    )


def until(view: StateView, condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Keep the view reading until ``condition`` holds."""
    wait_for(lambda: (view.poll(0.02), condition())[1], timeout, interval=0, what=what)


def data_of(view: StateView) -> dict[Any, Any]:
    return {k: e.data for k, e in view.items()}


def applied_once(changes: list[StateChange]) -> None:
    """No message was applied twice: every added/updated change carries a new id."""
    ids = [c.entry.message.id for c in changes if c.kind in ("added", "updated") and c.entry]
    assert len(ids) == len(set(ids))


@pytest.mark.timeout(150)
def test_a_view_started_mid_stream_converges_to_exactly_the_publishers_final_map(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    # busd's queue for the view holds the live stream while the view applies 100,000
    # entries however loaded the machine (10,000 messages is 10 s at this rate): this test
    # shows nothing is lost; the one below shows what happens when something is.
    busd = busd_factory(extra_args=("--sub-hwm", "200000"))
    instances = [f"i{n}" for n in range(INSTANCES)]
    final = load(busd.pub_endpoint, "shop", instances)
    feeder = Feeder(busd.pub_endpoint, "shop", instances, final, RATE)
    feeder.start()
    changes: list[StateChange] = []
    try:
        wait_for(lambda: feeder.count >= 200, 10, what="updates flowing")
        with view_of(busd, on_change=changes.append) as view:
            assert view.wait_synced(90)
            synced_at = feeder.count
            until(view, lambda: feeder.count >= synced_at + 1000, 30, "1,000 updates after")
            feeder.finish()
            link = view.core.links[0]
            until(
                view,
                lambda: all(link.positions.get(t.encode()) == n for t, n in feeder.sent.items()),
                60,
                "the view at the publisher's last message of every topic",
            )
            assert data_of(view) == final  # key by key: values, and which keys exist
            kinds = {c.kind for c in changes}
            assert "lost" not in kinds and "failed" not in kinds, view.statistics()
            assert {"removed", "updated"} <= kinds
            applied_once(changes)
            assert view.core.bad == 0
    finally:
        feeder.stop.set()


@pytest.mark.timeout(60)
async def test_the_asyncio_view_converges_to_exactly_the_publishers_final_map(
    busd: BusdProcess,
) -> None:
    instances = [f"a{n}" for n in range(3000)]
    final = load(busd.pub_endpoint, "web", instances)
    feeder = Feeder(busd.pub_endpoint, "web", instances, final, RATE)
    feeder.start()
    changes: list[StateChange] = []
    try:
        wait_for(lambda: feeder.count >= 200, 10, what="updates flowing")
        async with AsyncStateView(
            PREFIX,
            state_endpoint=busd.state_endpoint,
            sub_endpoint=busd.sub_endpoint,
            on_change=changes.append,
        ) as view:
            assert await view.wait_synced(30)
            synced_at = feeder.count
            while feeder.count < synced_at + 1000:
                await view.poll(0.02)
            feeder.finish()
            link = view.core.links[0]
            while not all(link.positions.get(t.encode()) == n for t, n in feeder.sent.items()):
                await view.poll(0.02)
            assert {k: e.data for k, e in view.items()} == final
            assert not {"lost", "failed"} & {c.kind for c in changes}
            applied_once(changes)
    finally:
        feeder.stop.set()


@pytest.mark.timeout(30)
def test_an_entry_not_refreshed_within_its_ttl_expires_in_the_view(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(start=False)
    meta_path = busd.schemas_dir / "instance-state" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["state"]["ttl_s"] = 1.5
    meta_path.write_text(json.dumps(meta))
    busd.start()
    load(busd.pub_endpoint, "shop", ["old"])
    changes: list[StateChange] = []
    with view_of(busd, on_change=changes.append) as view:
        assert view.wait_synced(10) and key("shop", "old") in view
        with Publisher(busd.pub_endpoint, name="p") as pub:
            pub.publish_wait(topic("shop", "new"), SCHEMA, 1, payload("shop", "new"))
        until(view, lambda: key("shop", "new") in view, 10, "the live entry")
        until(view, lambda: len(view) == 0, 10, "both entries expired")
        assert [c.key for c in changes if c.kind == "expired"] == [
            key("shop", "old"),
            key("shop", "new"),
        ]
    with StateView(PREFIX, state_endpoint=busd.state_endpoint, live=False) as listing:
        assert listing.wait_synced(10) and len(listing) == 0  # busd dropped them too


@pytest.mark.timeout(60)
def test_a_killed_and_restarted_busd_is_reported_and_the_view_refills(busd: BusdProcess) -> None:
    before = load(busd.pub_endpoint, "shop", [f"i{n}" for n in range(500)])
    changes: list[StateChange] = []
    with view_of(busd, on_change=changes.append) as view:
        assert view.wait_synced(10) and data_of(view) == before
        first_epoch = view.core.links[0].epoch
        busd.kill()  # kill -9: busd's cache is gone
        until(view, lambda: any(c.kind == "lost" for c in changes), 10, "the loss reported")
        busd.start()
        until(view, lambda: any(c.kind == "restarted" for c in changes), 20, "the restart")
        until(view, lambda: view.core.links[0].snapshots == 2, 20, "a new snapshot")
        assert view.core.links[0].epoch != first_epoch
        assert data_of(view) == before  # kept until refreshed or expired
        after = load(busd.pub_endpoint, "shop", [f"i{n}" for n in range(250)], at=2)
        until(view, lambda: all(view[k].data == d for k, d in after.items()), 20, "refilled")
        assert len(view) == 500
    kinds = [c.kind for c in changes if c.key is None]
    assert kinds == ["synced", "lost", "restarted", "synced"], kinds


@pytest.mark.timeout(120)
def test_a_pool_view_with_a_broker_killed_during_its_snapshot_reports_it_and_converges(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    one, two, three = (busd_factory(name=f"bus{n}") for n in (1, 2, 3))
    held = load(one.pub_endpoint, "one", [f"i{n}" for n in range(2000)])
    held |= load(three.pub_endpoint, "three", [f"i{n}" for n in range(2000)])
    # broker two holds many entries, so its snapshot takes long enough to be cut short
    two_held = load(two.pub_endpoint, "two", [f"i{n}" for n in range(60_000)])
    changes: list[StateChange] = []
    brokers = [(b.state_endpoint, b.sub_endpoint) for b in (one, two, three)]
    with StateView(PREFIX, brokers=brokers, on_change=changes.append, timeout=5.0) as view:
        link, others = view.core.links[1], (view.core.links[0], view.core.links[2])
        until(
            view,
            lambda: (
                link.next_part >= 1
                and link.phase == "requesting"
                and view.synced is False
                and all(o.snapshots for o in others)
            ),
            30,
            "broker two's snapshot mid-way, the others' done",
        )
        two.kill()
        until(view, lambda: link.failures >= 1, 15, "the failed snapshot reported")
        failed = [c for c in changes if c.kind == "failed"]
        assert failed[0].broker == two.state_endpoint
        assert view.core.links[0].snapshots and view.core.links[2].snapshots
        # Live from the others: every update through them lands; one key moves broker.
        with Publisher(one.pub_endpoint, name="p") as pub:
            for n in range(100):
                data = payload("one", f"i{n}", "idle", at=5)
                pub.publish(topic("one", f"i{n}"), SCHEMA, 1, data)
                held[key("one", f"i{n}")] = data
            pub.publish(topic("three", "i0"), SCHEMA, 1, payload("three", "i0", "down", at=5))
            del held[key("three", "i0")]
            assert pub.flush() == []
        until(view, lambda: all(view.get(k) and view[k].data == d for k, d in held.items()), 20, "")
        until(view, lambda: key("three", "i0") not in view, 10, "the end applied")
        # Of broker two it holds the parts that came before the kill: exactly what broker two
        # held for those keys, and not all of them (what the kill took is gone with busd).
        got = {k: e.data for k, e in view.items() if k[1] == "two"}
        assert 0 < len(got) < len(two_held)
        assert all(two_held[k] == d for k, d in got.items())
        two.start()  # back, empty (crash-only): a new epoch, snapshotted again
        until(view, lambda: link.snapshots == 1, 20, "broker two snapshotted when back")
        assert {k: e.data for k, e in view.items() if k[1] == "two"} == got
        assert {k: e.data for k, e in view.items() if k[1] != "two"} == held


@pytest.mark.timeout(90)
def test_messages_lost_by_a_slow_view_are_reported_and_repaired_by_a_new_snapshot(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    busd = busd_factory(extra_args=("--sub-hwm", "100"))
    instances = [f"i{n}" for n in range(500)]
    final = load(busd.pub_endpoint, "shop", instances)
    changes: list[StateChange] = []
    with view_of(busd, on_change=changes.append, rcvhwm=100) as view:
        assert view.wait_synced(10)
        # The view does not read while 60,000 updates pass: busd drops what its queue
        # (sub_hwm) and the view's (rcvhwm) cannot hold.
        with Publisher(busd.pub_endpoint, name="burst", timeout=30.0) as pub:
            for n in range(60_000):
                instance = instances[n % len(instances)]
                data = payload("shop", instance, ("idle", "up", "crashed")[n % 3], at=2 + n)
                pub.publish(topic("shop", instance), SCHEMA, 1, data)
                final[key("shop", instance)] = data
            assert pub.flush() == []
        until(view, lambda: data_of(view) == final, 30, "the view repaired")
        assert any(c.kind == "lost" for c in changes)
        assert view.core.links[0].snapshots >= 2
