"""The sans-I/O core of the state view: snapshot then live, per broker, merged in one table.

A driver (state_view.py, aio_state.py) owns the sockets: per broker a DEALER to its state
endpoint and a SUB to its egress, each with a monitor. It feeds this core what they read
and the connection events, calls ``tick`` when ``next_deadline`` comes, and carries out
what ``outbox`` holds, in order: ``("subscribe", link, prefix)``, ``("unsubscribe", ...)``
and ``("request", link, frame)``. No sockets and no clock reads here: ``now`` is monotonic
seconds, ``wall`` Unix seconds.

The protocol (docs/protocol.md "State snapshots"), per broker (a ``Link``):

1. ``waiting``: the SUB already subscribes to the prefix; live messages are applied at
   once (they are all older than any cut to come). Once both connections are up (and
   ``retry_at`` passed) an attempt starts: subscribe ``SYNC_PREFIX + token`` (so busd cuts
   only once the live subscription before it is in force), then send the request.
2. ``requesting``: live messages are buffered; parts are decoded and applied, or held
   until the ``end`` when their schema's rule is not known yet. At ``end`` (epoch E,
   positions P): the rest of the entries are applied (a key the view took from this
   broker in epoch E that the snapshot lacks is removed), buffered messages of an earlier
   epoch never replace this epoch's entries, then each buffered message on topic T
   with seq s: covered by the cut when s <= P[T] in epoch E, and then dropped (except an
   ``ends`` whose key the snapshot lacks: it removes an entry kept from before), else
   applied. Then ``live``.
3. ``live``: messages are applied as they come; their stamps are checked against the
   positions: a gap (messages lost: a full queue, a reconnect) or a lost connection sends
   the link back to ``waiting`` (``lost``: snapshotted again), a new epoch is busd's
   restart (``restarted``: snapshotted again, entries kept until refreshed or expired).

A snapshot fails (``failed``, retried after a back-off) when busd answers an error, sends
nothing for ``timeout`` seconds, or either connection drops meanwhile; what was buffered is
applied (those messages were accepted by busd: in a pool, the only copies), and in a pool
the parts that came too (the merge keeps the newest). The SUB's
reconnection voids an attempt: libzmq resends a SUB's subscriptions in byte order, the
token (0x00...) before the prefix, so the token proves nothing on a new connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Literal

from busd_client.state_link import BACKOFF_MIN as _BACKOFF_MIN
from busd_client.state_link import Link, Live
from busd_client.state_table import StateChange, StateTable, key_of
from busd_protocol.messages import DecodeError, Message, decode_message
from busd_protocol.schemas.state import StateRule
from busd_protocol.snapshots import (
    End,
    Failure,
    Part,
    SnapshotError,
    decode_reply,
    encode_request,
    new_sync_token,
    sync_subscription,
)
from busd_protocol.stamps import read_stamp

__all__ = ["Action", "Link", "StateCore"]

Action = tuple[Literal["subscribe", "unsubscribe", "request"], "Link", bytes]
_BACKOFF_MAX = 5.0
# Fatal answers: asking again at once changes nothing, so they wait the longest back-off.
_SLOW = frozenset({SnapshotError.FORBIDDEN.value, SnapshotError.BAD_REQUEST.value})


class StateCore:
    """One view's links, table and rules. ``live`` False: one snapshot per broker, no SUB
    (a request without sync: busd cuts at once; for a one-off listing)."""

    def __init__(
        self,
        prefix: str,
        brokers: Sequence[str],
        *,
        live: bool = True,
        timeout: float = 10.0,
        buffer_max: int = 200_000,
    ) -> None:
        if not brokers:
            raise ValueError("a state view needs at least one broker")
        self.prefix = prefix
        self.live = live
        self.timeout = timeout
        self.buffer_max = buffer_max
        self.links = [Link(i, name) for i, name in enumerate(brokers)]
        self.table = StateTable(merge=len(brokers) > 1)
        self.rules: dict[str, StateRule] = {}
        self.outbox: deque[Action] = deque()
        self.changes: list[StateChange] = []  # since the driver last took them
        self.bad = 0  # replies or messages that break the protocol
        self.stale_replies = 0  # answers to an attempt already given up
        self.overflows = 0  # attempts restarted because their buffer filled
        # A pool's live messages from a failed first attempt, before any rule was known.
        self._early: list[tuple[Link, Live]] = []

    # -- what the driver reports ------------------------------------------------------------

    def on_dealer(self, link: Link, up: bool, now: float, wall: float) -> None:
        link.dealer_up = up
        if not up and link.phase == "requesting":
            self._fail(link, "lost the connection to the state endpoint", now, wall, True)

    def on_sub(self, link: Link, up: bool, now: float, wall: float) -> None:
        link.sub_up = up
        link.sub_events += 1
        if up:
            return
        if link.phase == "requesting":
            self._fail(link, "lost the connection to the egress endpoint", now, wall, True)
        elif link.phase == "live":
            link.phase = "waiting"
            self._note(StateChange("lost", broker=link.name, detail="connection lost"))

    def on_reply(self, link: Link, frames: list[bytes], now: float, wall: float) -> None:
        try:
            reply = decode_reply(frames)
        except ValueError:
            self.bad += 1
            return
        # An error without req answers a request busd could not read: ours, if one is out.
        unread = isinstance(reply, Failure) and reply.req is None
        if link.phase != "requesting" or (reply.req != link.req and not unread):
            self.stale_replies += 1
            return
        link.progress = now
        if isinstance(reply, Part):
            self._part(link, reply, now, wall)
        elif isinstance(reply, End):
            self._end(link, reply, now, wall)
        else:
            self._refused(link, reply, now, wall)

    def on_live(self, link: Link, frames: list[bytes], now: float, wall: float) -> None:
        """One message from the link's SUB: topic, envelope and stamp frames."""
        if len(frames) != 3 or (read := read_stamp(frames[2])) is None:
            self.bad += 1
            return
        topic, envelope = frames[0], frames[1]
        epoch, seq = read
        if link.phase == "requesting":
            link.buffer.append((topic, envelope, epoch, seq))
            if len(link.buffer) > self.buffer_max:
                self.overflows += 1
                self._fail(link, "too many live messages during the snapshot", now, wall, True)
            return
        if epoch != link.reported and link.reported is not None:
            self._restarted(link, epoch)
        item = (topic, envelope, epoch, seq)
        if link.phase == "live":
            last = link.positions.get(topic, 0)
            if seq <= last and seq != 1:
                # Before the cut: the end overtook it (another connection). Seq 1 is let
                # through: a topic busd forgot starts again at 1 (the table's stamp check
                # drops it when it is an old copy).
                self._covered(link, item, now, wall)
                return
            link.positions[topic] = seq
            if seq > last + 1:
                link.phase = "waiting"
                lost = f"{seq - last - 1} message(s) of {topic.decode(errors='replace')}"
                self._note(StateChange("lost", broker=link.name, detail=lost))
        self._apply(link, item, now, wall)

    def tick(self, now: float, wall: float) -> None:
        """Deadlines: attempts due, attempts silent too long, TTL."""
        for link in self.links:
            if link.phase == "waiting" and now >= link.retry_at and link.dealer_up:
                if link.sub_up or not self.live:
                    self._start(link, now)
            elif link.phase == "requesting" and now - link.progress >= self.timeout:
                self._fail(link, f"no answer for {self.timeout:g} s", now, wall)
        self.changes.extend(self.table.expire(now))

    def next_deadline(self) -> float | None:
        times = [self.table.next_expiry()]
        for link in self.links:
            if link.phase == "waiting" and link.dealer_up and (link.sub_up or not self.live):
                times.append(link.retry_at)
            elif link.phase == "requesting":
                times.append(link.progress + self.timeout)
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def sent_failed(self, link: Link, now: float, wall: float) -> None:
        """The request could not be handed to libzmq (the connection is not up)."""
        if link.phase == "requesting":
            link.dealer_up = False
            self._fail(link, "the state endpoint is not connected", now, wall, True)

    def take_changes(self) -> list[StateChange]:
        changes, self.changes = self.changes, []
        return changes

    @property
    def synced(self) -> bool:
        """Every broker has been snapshotted at least once."""
        return all(link.snapshots for link in self.links)

    @property
    def answered(self) -> bool:
        """Every broker has been snapshotted or has refused (asking again soon is no use)."""
        return all(link.snapshots or link.refused for link in self.links)

    # -- the attempt ------------------------------------------------------------------------

    def _start(self, link: Link, now: float) -> None:
        link.req += 1
        link.phase = "requesting"
        link.progress = now
        link.parts = []
        link.present = set()
        link.received = 0
        link.next_part = 0
        link.buffer = []
        sync = None
        if self.live:
            sync = new_sync_token()
            link.token = sync_subscription(sync)
            link.mark = link.sub_events
            self.outbox.append(("subscribe", link, link.token))
        self.outbox.append(("request", link, encode_request(link.req, self.prefix, sync)))

    def _part(self, link: Link, part: Part, now: float, wall: float) -> None:
        if part.part != link.next_part:
            self.bad += 1
            self._fail(link, f"part {part.part} came when {link.next_part} was due", now, wall)
            return
        link.next_part += 1
        link.received += len(part.entries)
        for entry in part.entries:
            try:
                message = decode_message(entry.topic.encode(), entry.envelope)
            except DecodeError:
                self.bad += 1
                continue
            if message.schema in self.rules:  # known from an earlier end: applied now
                self._snapshot_entry(link, message, (entry.epoch, entry.seq), now, wall)
            else:
                link.parts.append((message, entry.epoch, entry.seq))

    def _snapshot_entry(
        self, link: Link, message: Message, stamp: tuple[int, int], now: float, wall: float
    ) -> None:
        rule = self.rules.get(message.schema)
        key = None if rule is None else key_of(message, rule)
        if key is None:
            self.table.unkeyed += 1
            return
        link.present.add(key)
        where = (stamp[0], stamp[1], link.name)
        change = self.table.offer(message, rule, where, now, wall, snapshot=True, key=key)
        if change is not None:
            self.changes.append(change)

    def _end(self, link: Link, end: End, now: float, wall: float) -> None:
        if self.live and link.sub_events != link.mark:
            self._fail(
                link, "the egress connection was renewed during the snapshot", now, wall, True
            )
            return
        self._drop_token(link)
        if link.reported is not None and end.epoch != link.reported:
            self._restarted(link, end.epoch)
        link.reported = end.epoch
        self.rules.update(end.rules)
        name = link.name
        early, self._early = self._early, []
        for other, item in early:
            self._apply(other, item, now, wall)
        for message, epoch, seq in link.parts:
            self._snapshot_entry(link, message, (epoch, seq), now, wall)
        # From an earlier epoch (read before the new connection's): older than the cut, so
        # never over an entry of this epoch.
        later = []
        for item in link.buffer:
            if item[2] == end.epoch:
                later.append(item)
            else:
                self._apply(link, item, now, wall, below=end.epoch)
        self.changes.extend(self.table.drop_missing(name, end.epoch, link.present))
        count = link.received
        positions = {topic.encode(): seq for topic, seq in end.topics.items()}
        gap = ""
        for item in later:
            topic, seq = item[0], item[3]
            last = positions.get(topic, 0)
            if seq <= last:  # (a topic's number restarts at 1 only after minutes idle)
                self._covered(link, item, now, wall)
                continue
            if seq != last + 1 and seq != 1 and not gap:
                gap = f"{seq - last - 1} message(s) of {topic.decode(errors='replace')}"
            positions[topic] = seq
            self._apply(link, item, now, wall)
        link.positions = positions
        link.epoch = end.epoch
        link.parts, link.buffer, link.present = [], [], set()
        link.phase = "live" if self.live else "done"
        link.snapshots += 1
        link.backoff = _BACKOFF_MIN
        link.error = link.refused = ""
        self._note(StateChange("synced", broker=name, detail=f"{count} entries"))
        if gap:
            link.phase = "waiting"
            self._note(StateChange("lost", broker=name, detail=gap))

    def _covered(self, link: Link, item: Live, now: float, wall: float) -> None:
        """A live message the cut already holds: only an ``ends`` still matters, for an entry
        older than the cut (kept from an earlier epoch; in a pool, the merge decides)."""
        topic, envelope, epoch, seq = item
        try:
            message = decode_message(topic, envelope)
        except DecodeError:
            self.bad += 1
            return
        rule = self.rules.get(message.schema)
        if rule is None or not rule.is_end(message.data):
            return
        key = key_of(message, rule)
        entry = None if key is None else self.table.entries.get(key)
        if entry is None:
            return
        if not self.table.merge and entry.broker == link.name and entry.epoch == epoch:
            return  # the snapshot's entry, or a later one: newer than this end
        change = self.table.offer(message, rule, (epoch, seq, link.name), now, wall)
        if change is not None:
            self.changes.append(change)

    def _refused(self, link: Link, failure: Failure, now: float, wall: float) -> None:
        self._fail(link, f"busd answered {failure.code}: {failure.reason}", now, wall)
        if failure.code in _SLOW:
            link.refused = failure.code
            link.backoff = _BACKOFF_MAX
            link.retry_at = now + _BACKOFF_MAX

    def _fail(self, link: Link, why: str, now: float, wall: float, at_once: bool = False) -> None:
        buffered, parts = link.buffer, link.parts
        link.present = set()
        link.phase = "waiting"
        link.parts, link.buffer = [], []
        link.failures += 1
        link.error = why
        self._drop_token(link)
        link.retry_at = now if at_once else now + link.backoff
        link.backoff = min(_BACKOFF_MAX, link.backoff * 2)
        self._note(StateChange("failed", broker=link.name, detail=why))
        # Accepted by busd and seen by no snapshot: in a pool, the only copies there are
        # (before any snapshot gave the rules, held until one does).
        if not self.rules and self.table.merge:
            self._early.extend((link, item) for item in buffered[: self.buffer_max])
            del self._early[: max(0, len(self._early) - self.buffer_max)]
        if self.table.merge:  # the parts that came are the broker's entries: newest wins
            for message, epoch, seq in parts:
                rule = self.rules.get(message.schema)
                stamp = (epoch, seq, link.name)
                change = self.table.offer(message, rule, stamp, now, wall, snapshot=True)
                if change is not None:
                    self.changes.append(change)
        for item in buffered:
            self._apply(link, item, now, wall)

    def _drop_token(self, link: Link) -> None:
        if link.token is not None:
            self.outbox.append(("unsubscribe", link, link.token))
            link.token = None

    def _restarted(self, link: Link, epoch: int) -> None:
        was = link.reported
        link.reported = epoch
        link.phase = "waiting" if link.phase == "live" else link.phase
        self._note(
            StateChange("restarted", broker=link.name, detail=f"epoch {was:016x} -> {epoch:016x}")
        )

    def _apply(
        self, link: Link, item: Live, now: float, wall: float, below: int | None = None
    ) -> None:
        """Apply a live message; ``below``: an epoch it is older than (one broker: it does
        not replace that epoch's entry from this broker)."""
        topic, envelope, epoch, seq = item
        if not self.rules:
            return  # no snapshot yet: the first one holds what this message did
        try:
            message = decode_message(topic, envelope)
        except DecodeError:
            self.bad += 1
            return
        rule = self.rules.get(message.schema)
        if below is not None and rule is not None and not self.table.merge:
            key = key_of(message, rule)
            entry = None if key is None else self.table.entries.get(key)
            if entry is not None and entry.broker == link.name and entry.epoch == below:
                self.table.stale += 1
                return
        change = self.table.offer(message, rule, (epoch, seq, link.name), now, wall)
        if change is not None:
            self.changes.append(change)

    def _note(self, change: StateChange) -> None:
        self.changes.append(change)
