"""The sans-I/O publishing core: what every publisher does with a message, wherever it goes.

A driver (sync_driver.py, aio_driver.py) owns the sockets and does the waiting; it has a
``PublishCore``, which composes messages (ids, topic frames, the envelope through
``busd_protocol.messages.encode_envelope``, the optional local schema check) and has a
``Strategy``, which decides where and when each message goes and what a reply, a
connection event or a passing deadline means for it: ``SingleBroker``
(single_broker.py) or ``PoolStrategy`` (pool_strategy.py). No sockets and no clock reads
here or in a strategy: time is monotonic seconds, passed in.

A strategy returns what to send: ``add`` names the link a new message goes on at once
(None: it waits in the strategy), ``next_batch`` the next waiting messages that go out
together (one batch, docs/protocol.md §1.2) and their link. The driver writes the frames
(header with ``link.next_seq``) and says how it went: ``sent`` (once per message, in batch
order) or ``blocked`` (the socket would not take it). What settled is on each message
(``done()``, ``error``) and counted in the strategy's ``Ledger``. ``submit`` and
``dispatch`` are those two exchanges, written once, over the driver's ``send`` (one
message) and ``send_batch`` (several in one ZeroMQ message).

Natural batching (docs/client.md "Batches"): a message that can go at once goes alone, at
once (``add`` names a link); messages that wait (the socket was full or down, the window
was full, resends due together, ``enqueue`` from ``publish_many``) go out together, at most
``max_batch`` and at most what the broker said it takes (``link.batch``, 1 until a reply
said more). ``linger`` > 0 lets a new message wait up to that long for others to fill a
batch; ``hurry`` (flush, result) sends what lingers at once.
"""

from __future__ import annotations

import enum
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

import msgpack

from busd_client.errors import PublishTimeout, Rejected
from busd_client.ledger import Ledger, Link, Pending
from busd_protocol.envelope import PUBLISHER_NAME, PUBLISHER_RULE
from busd_protocol.frames import MAX_BATCH_LIMIT
from busd_protocol.messages import (
    ENVELOPE_DATA_KEY,
    ENVELOPE_ID_KEY,
    ENVELOPE_TS_KEY,
    EnvelopeEncoder,
    pack_uint64,
)
from busd_protocol.schemas import SchemaSet

__all__ = [
    "DEFAULT",
    "DEFAULT_MAX_BATCH",
    "CoreFacade",
    "PublishCore",
    "Send",
    "SendBatch",
    "Strategy",
    "dispatch",
    "submit",
]

_unpackb = msgpack.unpackb
_join = b"".join
_TS_END = 1 << 64
_TOPIC_FRAMES_MAX = 4096  # callers with unbounded topic sets: the cache stays bounded

P = TypeVar("P", bound=Pending)
# The driver's non-blocking write of one message to ``link`` (header seq ``link.next_seq``):
# True when libzmq took it.
Send = Callable[[Link, Pending], bool]
# The same for several messages in one ZeroMQ message (a batch, seqs from ``link.next_seq``):
# all of them or none (libzmq refuses a multipart message only at its first frame).
SendBatch = Callable[[Link, list[Pending]], bool]
DEFAULT_MAX_BATCH = 100  # messages per batch a publisher sends at most, unless told


class _Default(enum.Enum):
    """Marks a keyword left out, so the publisher's own setting applies."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default.DEFAULT


class Strategy(Protocol):
    """Where and when messages go. Every method is non-blocking and takes the time."""

    ledger: Ledger
    links: list[Link]  # one per broker; ``link.index`` is its socket's position
    waiting: deque[Pending]  # to be sent (again), oldest first
    monitored: bool  # connections are reported by socket monitors (else by writability)
    send_in_publish: bool  # publish returns only once its message went out (or failed)
    max_batch: int  # messages per batch at most (1: no batches), set by PublishCore
    linger: float  # seconds a new message may wait for others to fill a batch (0: none)

    def add(self, p: Pending, now: float) -> Link | None:
        """A new message (counted from here): the link to send it on now, or None (it
        waits)."""
        ...

    def enqueue(self, p: Pending, now: float) -> None:
        """A new message (counted from here) that waits to go out with others given
        together with it (``publish_many``)."""
        ...

    def next_send(self, now: float) -> tuple[Link, Pending] | None:
        """The next waiting message and the link to send it on now; None: nothing can go."""
        ...

    def next_batch(self, now: float) -> tuple[Link, list[Pending]] | None:
        """The next waiting messages that go out together (at most ``max_batch`` and the
        link's ``batch``, oldest first) and the link to send them on now; None: nothing
        can go (or a lingering batch may still fill)."""
        ...

    def hurry(self) -> None:
        """What lingers to fill a batch may go at once (a caller waits for it)."""
        ...

    def sent(self, link: Link, p: Pending, now: float) -> None:
        """``p`` went out on ``link`` with sequence number ``link.next_seq``."""
        ...

    def blocked(self, link: Link, p: Pending, now: float) -> None:
        """``link``'s socket would not take ``p`` (full, or no connection)."""
        ...

    def on_reply(self, link: Link, frame: bytes, now: float) -> None: ...

    def on_connected(self, link: Link) -> None: ...

    def on_disconnected(self, link: Link) -> None: ...

    def expire(self, now: float) -> None:
        """Apply every deadline that has passed (reply, attempt, retry, message)."""
        ...

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time ``expire`` or ``next_send`` may have work; None: none."""
        ...

    def close(self) -> None:
        """Fail every message not settled yet with ClosedError."""
        ...


def submit(
    strategy: Strategy, p: Pending, now: float, send: Send, send_batch: SendBatch | None = None
) -> None:
    """A new message: sent at once, alone, when the strategy names a link and the socket
    takes it; otherwise it waits in the strategy, and what can go goes."""
    link = strategy.add(p, now)
    if link is not None:
        if send(link, p):
            strategy.sent(link, p, now)
            return
        strategy.blocked(link, p, now)
    dispatch(strategy, now, send, send_batch)


def dispatch(
    strategy: Strategy, now: float, send: Send, send_batch: SendBatch | None = None
) -> int:
    """Send waiting messages while the strategy names a link for them; return how many.
    With ``send_batch``, messages that go out together go as one batch."""
    count = 0
    sent, blocked = strategy.sent, strategy.blocked
    if send_batch is None:
        next_send = strategy.next_send
        while (item := next_send(now)) is not None:
            link, p = item
            if send(link, p):
                sent(link, p, now)
                count += 1
            else:
                blocked(link, p, now)
        return count
    next_batch = strategy.next_batch
    while (batch := next_batch(now)) is not None:
        link, ps = batch
        if send(link, ps[0]) if len(ps) == 1 else send_batch(link, ps):
            for p in ps:
                sent(link, p, now)
            count += len(ps)
        else:
            blocked(link, ps[0], now)
    return count


class PublishCore:
    """A publisher's settings and message composition, and its strategy."""

    def __init__(
        self,
        strategy: Strategy,
        *,
        name: str,
        window: int,
        timeout: float,
        retry_deadline: float | None,
        wait_when_disabled: bool,
        schemas: SchemaSet | str | os.PathLike[str] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = 0.0,
    ) -> None:
        if PUBLISHER_NAME.fullmatch(name) is None:
            raise ValueError(f"publisher name {name!r}: expected {PUBLISHER_RULE}")
        if window < 1:
            raise ValueError("window must be at least 1")
        if not timeout > 0:
            raise ValueError("timeout must be > 0 seconds")
        if type(max_batch) is not int or not 1 <= max_batch <= MAX_BATCH_LIMIT:
            raise ValueError(f"max_batch must be an int from 1 to {MAX_BATCH_LIMIT}")
        if not 0.0 <= linger < math.inf:
            raise ValueError("linger must be >= 0 seconds")
        strategy.max_batch = max_batch
        strategy.linger = float(linger) if max_batch > 1 else 0.0
        self.max_batch = max_batch
        self.linger = strategy.linger
        self.strategy = strategy
        self.ledger = strategy.ledger
        self.name = name
        self.window = window
        self.timeout = float(timeout)  # math.inf: a pool message that waits for ever
        self.retry_deadline = retry_deadline
        self.wait_when_disabled = wait_when_disabled
        # Ids: 64 random bits per publisher object, then a counter: unique, and cheaper than
        # 16 random bytes per message.
        self._id_prefix = os.urandom(8).hex()
        self._id_count = 0
        # One publisher is used from one thread, so its envelopes can share one packer, and
        # the fields it repeats are packed once per (topic, schema, version).
        self._encoder = EnvelopeEncoder(name)
        self._pack = self._encoder.pack
        # (topic, schema, version) -> (topic frame, envelope head), both packed once.
        self._heads: dict[tuple[str, str, int], tuple[bytes, bytes | None]] = {}
        # Optional local validation against the same schema files busd loads: a payload
        # busd would refuse raises here, with busd's code and reason, before it is sent.
        self.schemas = (
            schemas
            if schemas is None or isinstance(schemas, SchemaSet)
            else SchemaSet.load(schemas)
        )

    def compose(  # noqa: PLR0917 (internal, positional on the hot path)
        self,
        cls: type[P],
        topic: str,
        schema: str,
        version: int,
        data: Mapping[str, Any],
        id: str | None,
        retry_deadline: float | _Default | None,
        wait_when_disabled: bool | _Default,
        now: float,
        ts: int,
    ) -> P:
        """One message of class ``cls``, published at ``now`` (monotonic seconds) and
        stamped ``ts`` (wall-clock ns), encoded, not yet given to the strategy. Raises
        Rejected (``extra["local"]``) when the local schemas refuse it."""
        entry = self._heads.get((topic, schema, version))
        if entry is None or type(version) is not int:  # True == 1: the same key, not here
            entry = self._head(topic, schema, version)
        frame, head = entry
        if id is None:
            self._id_count += 1
            id = f"{self._id_prefix}{self._id_count:010x}"
        pack = self._pack
        if head is not None and 0 <= ts < _TS_END:
            envelope = _join(
                (
                    head,
                    ENVELOPE_ID_KEY,
                    pack(id),
                    ENVELOPE_TS_KEY,
                    pack_uint64(ts),
                    ENVELOPE_DATA_KEY,
                    pack(data),
                )
            )
        else:
            envelope = self._encoder.encode(topic, schema, version, data, id, ts)
        if self.schemas is not None:
            # Judge the bytes busd will judge: the decoded payload, not the caller's object.
            verdict = self.schemas.check(topic, schema, version, _unpackb(envelope)["data"])
            if verdict is not None:
                error = Rejected(verdict[0], verdict[1], extra={"local": True})
                error.id, error.topic = id, topic
                raise error
        rd = self.retry_deadline if retry_deadline is DEFAULT else retry_deadline
        wd = self.wait_when_disabled if wait_when_disabled is DEFAULT else wait_when_disabled
        retry_until = now + rd if rd else 0.0
        return cls(topic, frame, envelope, id, retry_until, wd)

    def compose_many(  # noqa: PLR0917 (internal, like compose)
        self,
        cls: type[P],
        messages: Iterable[Sequence[Any]],
        retry_deadline: float | _Default | None,
        wait_when_disabled: bool | _Default,
        now: float,
        wall_ns: Callable[[], int],
    ) -> list[P]:
        """``compose`` for each of ``messages`` — (topic, schema, version, data[, id]) —
        stamped by ``wall_ns()`` one by one; publish_many of both drivers."""
        compose = self.compose
        return [
            compose(
                cls,
                m[0],
                m[1],
                m[2],
                m[3],
                m[4] if len(m) > 4 else None,
                retry_deadline,
                wait_when_disabled,
                now,
                wall_ns(),
            )
            for m in messages
        ]

    def _head(self, topic: str, schema: str, version: int) -> tuple[bytes, bytes | None]:
        """The topic frame and envelope head of (topic, schema, version), remembered."""
        entry = (topic.encode(), self._encoder.head(topic, schema, version))
        if type(version) is int:
            if len(self._heads) >= _TOPIC_FRAMES_MAX:
                self._heads.clear()
            self._heads[(topic, schema, version)] = entry
        return entry

    def unsent(self, p: Pending, why: str) -> PublishTimeout:
        """The error of a publish that could not hand ``p`` over within ``timeout``."""
        err = PublishTimeout(f"not sent within {self.timeout:g} s: {why}", sent=False)
        err.id = p.id
        err.topic = p.topic
        return err


R = TypeVar("R", bound=Pending)


class CoreFacade(Generic[R]):
    """What a driver (sync_driver.SyncDriver, aio_driver.AsyncDriver) keeps of its core and
    shows of it: the settings, the counts, the receipt class it publishes."""

    _UNSETTLED: ClassVar[str] = "messages still in flight"  # a flush past its timeout says
    _CLOSE_WAIT: ClassVar[float] = math.inf  # close's flush waits at most this long

    def __init__(self, core: PublishCore, receipt: type[R]) -> None:
        self.core = core
        self._strategy = core.strategy
        self._ledger = core.ledger
        self._receipt = receipt
        self.window = core.window
        self.timeout = core.timeout
        self._closed = False
        self._since_read = 0  # publishes since replies were last read

    @property
    def name(self) -> str:
        """The publisher name put in every envelope."""
        return self.core.name

    @property
    def pending(self) -> int:
        """Messages whose fate is not known yet."""
        return self._ledger.count

    @property
    def bad_replies(self) -> int:
        """Reply frames that did not follow the protocol (ignored)."""
        return self._ledger.bad_replies

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def max_batch(self) -> int:
        """Messages per batch at most (1: every message goes alone)."""
        return self.core.max_batch

    @property
    def linger(self) -> float:
        """Seconds a message may wait for others to fill a batch (0: none)."""
        return self.core.linger

    @property
    def schemas(self) -> SchemaSet | None:
        """The schemas every payload is checked against before it is sent (None: off)."""
        return self.core.schemas

    @property
    def retry_deadline(self) -> float | None:
        """The retry deadline of a publish that does not give its own (None: no retries)."""
        return self.core.retry_deadline

    @retry_deadline.setter
    def retry_deadline(self, seconds: float | None) -> None:
        self.core.retry_deadline = seconds

    @property
    def wait_when_disabled(self) -> bool:
        """Whether a publish that does not say resends ``disabled`` refusals."""
        return self.core.wait_when_disabled

    @wait_when_disabled.setter
    def wait_when_disabled(self, wait: bool) -> None:
        self.core.wait_when_disabled = wait
