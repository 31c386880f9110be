"""Admission: the one place that decides a message's fate.

Order matters and is part of the contract: envelope shape first (cheap, needed by the rest),
then rate limits (so a flood costs little CPU), then the schema check (the costliest).
"""

from __future__ import annotations

from typing import Any, Protocol

from busd.kernel.codes import Reject
from busd.kernel.envelope import check_envelope, check_topic


class RateCheck(Protocol):
    """Token buckets; ``now`` is monotonic seconds. Takes a token when it admits."""

    def admit(self, topic: str, publisher: str, now: float) -> Reject | None: ...


class SchemaCheck(Protocol):
    """A loaded, immutable schema set."""

    def check(
        self, topic: str, schema: str, version: int, data: dict[str, Any], publisher: str = ""
    ) -> Reject | None: ...


class Admission:
    """Composes the checks. Owned by the broker task; swap parts with the ``install_*``."""

    __slots__ = ("rates", "schemas")

    def __init__(self, rates: RateCheck | None = None, schemas: SchemaCheck | None = None):
        self.rates = rates
        self.schemas = schemas

    def install_rates(self, rates: RateCheck | None) -> None:
        self.rates = rates

    def install_schemas(self, schemas: SchemaCheck | None) -> None:
        self.schemas = schemas

    def decide(self, topic: str, env: dict[str, Any], now: float) -> Reject | None:
        reject = check_topic(topic)
        if reject is not None:
            return reject
        return self.decide_checked_topic(topic, env, now)

    def decide_checked_topic(self, topic: str, env: dict[str, Any], now: float) -> Reject | None:
        """``decide`` for a topic that already passed ``check_topic`` (callers may remember
        good topics: the check depends on the topic alone)."""
        reject = check_envelope(topic, env)
        if reject is not None:
            return reject
        if self.rates is not None:
            reject = self.rates.admit(topic, env["publisher"], now)
            if reject is not None:
                return reject
        if self.schemas is not None:
            return self.schemas.check(
                topic, env["schema"], env["version"], env["data"], env["publisher"]
            )
        return None
