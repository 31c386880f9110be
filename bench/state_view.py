"""The state view's start-up cost: a busd holding N instance-state entries, a live stream of
updates at R messages/s, and a StateView (then a one-off listing) starting meanwhile.

    .venv/bin/python -m bench.state_view [--entries 100000] [--rate 1000]

Prints, for the view: time to its first entry, time until synced (every entry applied and
the live stream followed), and the client's CPU for it; the same for a listing
(``live=False``, what ``busdctl state`` does). Not part of ``make bench``'s comparison.
"""

from __future__ import annotations

import argparse
import threading
import time

from bench.servers import BusdOptions, free_port, start_busd
from busd_client import Publisher, StateChange, StateView


def payload(n: int, state: str, at: int) -> dict[str, object]:
    return {
        "app": "bench",
        "instance_id": f"i{n}",
        "state": state,
        "host": "h1.example",
        "version": "1",
        "reported_at": at,
    }


def feed(endpoint: str, entries: int, rate: float, stop: threading.Event) -> None:
    with Publisher(endpoint, name="feeder", timeout=30.0) as pub:
        started, sent = time.monotonic(), 0
        while not stop.is_set():
            n = sent % entries
            pub.publish(f"instance.bench.i{n}", "instance-state", 1, payload(n, "idle", 2 + sent))
            sent += 1
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        pub.flush()


def measure(view: StateView) -> tuple[float, float, float]:
    """Seconds to the first entry, to synced, and the CPU seconds spent."""
    first: list[float] = []
    started, cpu = time.monotonic(), time.process_time()

    def on_change(change: StateChange) -> None:
        if not first and change.key is not None:
            first.append(time.monotonic() - started)

    view._on_change = on_change
    assert view.wait_synced(120)
    return (first or [0.0])[0], time.monotonic() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.state_view")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    state = f"tcp://127.0.0.1:{free_port()}"
    server = start_busd(BusdOptions(extra=("--state-endpoint", state)), name="busd-state")
    stop = threading.Event()
    try:
        loaded = time.monotonic()
        with Publisher(server.pub_endpoint, name="loader", timeout=30.0) as pub:
            for n in range(args.entries):
                pub.publish(f"instance.bench.i{n}", "instance-state", 1, payload(n, "up", 1))
            assert pub.flush() == []
        print(f"loaded {args.entries} entries in {time.monotonic() - loaded:.2f} s")
        feeder = threading.Thread(
            target=feed, args=(server.pub_endpoint, args.entries, args.rate, stop), daemon=True
        )
        feeder.start()
        with StateView("instance.", state_endpoint=state, sub_endpoint=server.sub_endpoint) as v:
            first, synced, cpu = measure(v)
            print(
                f"view    ({args.rate:g} updates/s): first entry {first:.3f} s, "
                f"synced {synced:.2f} s, client CPU {cpu:.2f} s, {len(v)} entries"
            )
        with StateView("instance.", state_endpoint=state, live=False) as v:
            first, synced, cpu = measure(v)
            print(
                f"listing: first entry {first:.3f} s, done {synced:.2f} s, "
                f"client CPU {cpu:.2f} s, {len(v)} entries"
            )
    finally:
        stop.set()
        server.stop()


if __name__ == "__main__":
    main()
