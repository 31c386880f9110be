"""Admission: the one place that decides a message's fate, from its frames.

Order matters and is part of the contract (docs/protocol.md §2.1): the envelope's size, the
topic frame, the identity's permission to publish to it, the envelope's encoding and shape
(cheap, needed by the rest), the publisher name against the identity, then rate limits (so a
flood costs little CPU), then the schema of the claimed version (the costliest).
The header frame and the frame count are the transport's (``busd_protocol.frames``).

After accepting a message of a *state* schema (meta.json ``state``, kernel/state.py),
``decide`` leaves its key in ``state_key`` (``busd.kernel.state.StateKey``: the key, whether it
ends the entry, when it expires); ``None`` after
accepting any other message. The broker reads it right after an accept: no second decode.
"""

from __future__ import annotations

from typing import Any, Protocol

from busd.kernel.acl import Trust
from busd.kernel.state import Keyer, StateKey, keyer
from busd_protocol.codes import Code, Reject
from busd_protocol.envelope import check_envelope, check_topic
from busd_protocol.messages import decode_envelope
from busd_protocol.schemas.state import StateRule

# Good topics remembered by their bytes: saves a decode and a regex search per message.
GOOD_TOPICS_MAX = 65536
DEFAULT_MAX_BYTES = 1 << 20


class RateCheck(Protocol):
    """Token buckets; ``now`` is monotonic seconds. Takes a token when it admits."""

    def admit(self, topic: str, publisher: str, now: float) -> Reject | None: ...


class SchemaCheck(Protocol):
    """A loaded, immutable schema set."""

    def check(
        self, topic: str, schema: str, version: int, data: dict[str, Any], publisher: str = ""
    ) -> Reject | None: ...


class Admission:
    """Composes the checks. Owned by the broker task; swap parts with the ``install_*``.

    ``decide`` may raise only on a bug in a check; the caller answers ``internal``.
    """

    __slots__ = (
        "_good_topics",
        "_keyers",
        "max_bytes",
        "rates",
        "schemas",
        "state_key",
        "state_rules",
        "trust",
    )

    def __init__(
        self,
        rates: RateCheck | None = None,
        schemas: SchemaCheck | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.rates = rates
        self.schemas = schemas
        self.max_bytes = max_bytes
        self.trust: Trust | None = None  # keys and permissions; None: authentication off
        self._good_topics: dict[bytes, str] = {}
        self.state_rules: dict[str, StateRule] = {}  # schema name -> its state declaration
        self._keyers: dict[str, Keyer] = {}  # schema name -> its key function (install_state)
        self.state_key: StateKey | None = None  # of the message accepted last (see above)

    def fenced(self, reject: Reject, now: float) -> None:
        """A message got ``reject`` from an order fence (kernel/fences.py): a fenced
        ``rate_limited`` counts as a refusal of its rate key (``RateTable.count_fenced``)."""
        key = reject.extra.get("key")
        count = getattr(self.rates, "count_fenced", None)  # RateTable's; a test double may lack it
        if reject.code is Code.RATE_LIMITED and isinstance(key, str) and count is not None:
            count(key, now)

    def install_rates(self, rates: RateCheck | None) -> None:
        self.rates = rates

    def install_schemas(self, schemas: SchemaCheck | None) -> None:
        self.schemas = schemas
        self.install_state(self.state_rules)

    def install_state(self, rules: dict[str, StateRule]) -> None:
        """The state declarations of the schema set in force (installed with it, and again
        when schema checks are switched: without them a key's types are checked here)."""
        self.state_rules = rules
        checked = self.schemas is not None
        self._keyers = {name: keyer(name, rule, checked) for name, rule in rules.items()}

    def install_trust(self, trust: Trust | None) -> None:
        self.trust = trust

    def decide(
        self, topic_b: bytes, env_b: bytes, now: float, identity: str | None = None
    ) -> Reject | None:
        """The fate of one publish from its topic and envelope frames: ``None`` accepts.

        ``identity`` is the connection's authenticated key name (None: authentication off).
        """
        if len(env_b) > self.max_bytes:
            return Reject(
                Code.TOO_LARGE, f"envelope is {len(env_b)} bytes; the limit is {self.max_bytes}"
            )
        good = self._good_topics
        topic = good.get(topic_b)
        if topic is None:
            try:
                topic = topic_b.decode()
            except UnicodeDecodeError:
                return Reject(Code.BAD_TOPIC, "topic is not valid UTF-8")
            reject = check_topic(topic)
            if reject is not None:
                return reject
            if len(good) >= GOOD_TOPICS_MAX:
                good.clear()  # bounded: a million topics only cost re-checks
            good[topic_b] = topic
        trust = self.trust
        if identity is not None and trust is not None:
            refusal = trust.publish_refusal(identity, topic)
            if refusal is not None:
                return Reject(Code.FORBIDDEN, refusal)
        env = decode_envelope(env_b)
        if type(env) is not dict:
            return env  # type: ignore[return-value]
        reject = check_envelope(topic, env)
        if reject is not None:
            return reject
        if identity is not None and env["publisher"] != identity:
            return Reject(
                Code.FORBIDDEN,
                f"envelope.publisher is {env['publisher']}, but this connection's key is "
                f"{identity}: publish under your own name",
            )
        if self.rates is not None:
            reject = self.rates.admit(topic, env["publisher"], now)
            if reject is not None:
                return reject
        if self.schemas is not None:
            reject = self.schemas.check(
                topic, env["schema"], env["version"], env["data"], env["publisher"]
            )
            if reject is not None:
                return reject
        keyers = self._keyers
        key = keyers.get(env["schema"]) if keyers else None
        self.state_key = None if key is None else key(env["data"], now)
        return None
