"""StateView: the current entries of keyed-state schemas under a topic prefix, kept current.

Snapshot then live (docs/client.md "State: snapshot then live"): the view snapshots every
broker it is given and applies their live messages after the snapshot's position, so it
holds exactly what busd holds (the latest accepted message per key) and stays so. It is a
read-only mapping ``key -> StateEntry``, key ``(schema, *key values)``. Changes come from
``poll``/``follow`` and go to ``on_change``. The core (state_core.py) decides everything;
this driver waits for the sockets (state_sockets.py) inside the caller's calls, from one
thread, like Subscriber. AsyncStateView (aio_state.py) is the same over asyncio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import zmq

from busd_client.sockets import DEFAULT_SUB_ENDPOINT
from busd_client.state_core import StateCore
from busd_client.state_sockets import StateBroker, StateSockets, state_brokers
from busd_client.state_table import Key, StateChange, StateEntry
from busd_protocol.snapshots import DEFAULT_STATE_ENDPOINT

__all__ = ["StateView", "ViewBase"]

_monotonic = time.monotonic
_wall = time.time
_MAX_WAIT = 0.25  # a waiting call looks at its deadlines at least this often


class ViewBase(Mapping[Key, StateEntry]):
    """What the sync and asyncio views share: the core, its table as a mapping, counts."""

    core: StateCore
    _sockets: StateSockets
    _on_change: Callable[[StateChange], None] | None

    def _setup(
        self,
        prefix: str,
        brokers: Iterable[StateBroker | tuple[str, str]] | None,
        state_endpoint: str,
        sub_endpoint: str,
        *,
        live: bool,
        timeout: float,
    ) -> list[StateBroker]:
        found = state_brokers(
            [StateBroker(state_endpoint, sub_endpoint)] if brokers is None else brokers
        )
        self.prefix = prefix
        self.core = StateCore(prefix, [b.state_endpoint for b in found], live=live, timeout=timeout)
        return found

    def __getitem__(self, key: Key) -> StateEntry:
        return self.core.table.entries[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self.core.table.entries)

    def __len__(self) -> int:
        return len(self.core.table.entries)

    @property
    def synced(self) -> bool:
        """Every broker has been snapshotted at least once."""
        return self.core.synced

    @property
    def brokers(self) -> list[dict[str, object]]:
        """Per broker: endpoint, phase, epoch, connected, snapshots, failures, last error."""
        return [link.statistics() for link in self.core.links]

    def statistics(self) -> dict[str, object]:
        table, core = self.core.table, self.core
        return {
            "entries": len(table),
            "brokers": self.brokers,
            "unkeyed": table.unkeyed,
            "duplicates": table.duplicates,
            "stale": table.stale,
            "expired": table.expired,
            "bad": core.bad,
            "stale_replies": core.stale_replies,
            "overflows": core.overflows,
        }

    def _pump(self) -> list[StateChange]:
        self._sockets.pump(_monotonic(), _wall())
        changes = self.core.take_changes()
        if self._on_change is not None:
            for change in changes:
                self._on_change(change)
        return changes

    def _wait_ms(self, deadline: float | None) -> int:
        """How long to wait for the sockets: to the caller's deadline, the core's next one
        and at most _MAX_WAIT."""
        now = _monotonic()
        until = min(
            t for t in (deadline, self.core.next_deadline(), now + _MAX_WAIT) if t is not None
        )
        return max(0, math.ceil((until - now) * 1000))


class StateView(ViewBase):
    """The entries under ``prefix`` of one busd (``state_endpoint``, ``sub_endpoint``) or of
    a pool (``brokers``: ``StateBroker``s or (state, sub) endpoint pairs), merged.

    ``live`` False: one snapshot per broker and no live stream (a listing). ``timeout``: a
    snapshot that hears nothing from busd that long fails and is retried. ``on_change``
    gets every StateChange, inside the call that found it. Use from one thread.
    """

    def __init__(
        self,
        prefix: str = "",
        *,
        state_endpoint: str = DEFAULT_STATE_ENDPOINT,
        sub_endpoint: str = DEFAULT_SUB_ENDPOINT,
        brokers: Iterable[StateBroker | tuple[str, str]] | None = None,
        on_change: Callable[[StateChange], None] | None = None,
        live: bool = True,
        timeout: float = 10.0,
        rcvhwm: int = 100_000,
        context: zmq.Context[Any] | None = None,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 1.0,
    ) -> None:
        found = self._setup(
            prefix, brokers, state_endpoint, sub_endpoint, live=live, timeout=timeout
        )
        self._on_change = on_change
        self._poller = zmq.Poller()
        self._sockets = StateSockets(
            context if context is not None else zmq.Context.instance(),
            self.core,
            found,
            rcvhwm=rcvhwm,
            reconnect_ivl=reconnect_ivl,
            reconnect_ivl_max=reconnect_ivl_max,
            poller=self._poller,
        )
        self._closed = False

    def poll(self, timeout: float | None = 0.0) -> list[StateChange]:
        """The changes found within ``timeout`` seconds (0: only what is already here;
        None: wait for the first change), as soon as there are some."""
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            changes = self._pump()
            if changes or (deadline is not None and _monotonic() >= deadline):
                return changes
            self._poller.poll(self._wait_ms(deadline))

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until every broker has been snapshotted once (True), or ``timeout`` passed
        (False: the view holds what the others gave). Changes go to ``on_change`` only."""
        deadline = None if timeout is None else _monotonic() + timeout
        while not self.core.synced:
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self.poll(remaining if remaining is None else min(remaining, _MAX_WAIT))
        return True

    def follow(self, timeout: float | None = None) -> Iterator[StateChange]:
        """Every change, as it happens, for ``timeout`` seconds (None: for ever)."""
        deadline = None if timeout is None else _monotonic() + timeout
        while deadline is None or _monotonic() < deadline:
            wait = _MAX_WAIT if deadline is None else max(0.0, deadline - _monotonic())
            yield from self.poll(min(wait, _MAX_WAIT))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sockets.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
