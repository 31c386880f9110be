"""instance-state traffic for the state view's tests: payloads, a bulk load, and a feeder
thread that updates keys at a steady rate and keeps the publisher's own final map."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

from busd_client import Publisher

SCHEMA = "instance-state"
PREFIX = "instance."


def payload(app: str, instance: str, state: str = "up", at: int = 1) -> dict[str, Any]:
    return {
        "app": app,
        "instance_id": instance,
        "state": state,
        "host": "h1.example",
        "version": "42",
        "reported_at": at,
    }


def topic(app: str, instance: str) -> str:
    return f"instance.{app}.{instance}"


def key(app: str, instance: str) -> tuple[str, str, str]:
    return (SCHEMA, app, instance)


def load(endpoint: str, app: str, instances: Iterable[str], at: int = 1) -> dict[Any, Any]:
    """Publish one ``up`` state per instance; the map of what was accepted."""
    final: dict[Any, Any] = {}
    with Publisher(endpoint, name="loader", timeout=30.0) as pub:
        for instance in instances:
            data = payload(app, instance, "up", at)
            pub.publish(topic(app, instance), SCHEMA, 1, data)
            final[key(app, instance)] = data
        assert pub.flush() == []
    return final


class Feeder(threading.Thread):
    """Updates random instances of ``app`` at ``rate`` messages/s until stopped: states
    change, some go ``down`` (which ends the key) and come back. ``final`` is the map the
    publisher has sent (every message is waited for: accepted or the test fails), ``sent``
    counts the messages per topic (busd's sequence number of the topic's last one, when
    the topics carried nothing before the load)."""

    def __init__(
        self, endpoint: str, app: str, instances: list[str], final: dict[Any, Any], rate: float
    ) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.app, self.instances = endpoint, app, instances
        self.final = final
        self.rate = rate
        self.stop = threading.Event()
        self.sent: dict[str, int] = {topic(app, i): 1 for i in instances}  # the load's message
        self.count = 0
        self.error: BaseException | None = None
        self._rng = random.Random(14)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test through .error
            self.error = exc

    def _run(self) -> None:
        states = ("up", "idle", "crashed", "starting", "down")
        at = itertools.count(2)
        started = time.monotonic()
        with Publisher(self.endpoint, name="feeder", timeout=30.0) as pub:
            while not self.stop.is_set():
                instance = self._rng.choice(self.instances)
                data = payload(self.app, instance, self._rng.choice(states), next(at))
                t = topic(self.app, instance)
                pub.publish(t, SCHEMA, 1, data)
                self.sent[t] += 1
                self.count += 1
                if data["state"] == "down":
                    self.final.pop(key(self.app, instance), None)
                else:
                    self.final[key(self.app, instance)] = data
                ahead = started + self.count / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                if self.count % 100 == 0:
                    assert pub.flush() == []
            assert pub.flush() == []

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
