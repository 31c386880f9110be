"""AsyncStateView: StateView (state_view.py) for asyncio code, over the same core and
sockets; only the waiting differs (a zmq.asyncio.Poller)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Self

import zmq.asyncio

from busd_client.sockets import DEFAULT_SUB_ENDPOINT
from busd_client.state_sockets import StateBroker, StateSockets
from busd_client.state_table import StateChange
from busd_client.state_view import _MAX_WAIT, ViewBase, _monotonic
from busd_protocol.snapshots import DEFAULT_STATE_ENDPOINT

__all__ = ["AsyncStateView"]


class AsyncStateView(ViewBase):
    """See StateView: ``await view.poll(timeout)``, ``await view.wait_synced(timeout)``,
    ``async for change in view.follow(timeout)``; the mapping reads never wait."""

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
        context: zmq.asyncio.Context | None = None,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 1.0,
    ) -> None:
        found = self._setup(
            prefix, brokers, state_endpoint, sub_endpoint, live=live, timeout=timeout
        )
        self._on_change = on_change
        self._poller = zmq.asyncio.Poller()
        self._sockets = StateSockets(
            context if context is not None else zmq.asyncio.Context.instance(),
            self.core,
            found,
            rcvhwm=rcvhwm,
            reconnect_ivl=reconnect_ivl,
            reconnect_ivl_max=reconnect_ivl_max,
            poller=self._poller,
        )
        self._closed = False

    async def poll(self, timeout: float | None = 0.0) -> list[StateChange]:  # noqa: ASYNC109
        """The changes found within ``timeout`` seconds (see StateView.poll)."""
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            changes = self._pump()
            if changes or (deadline is not None and _monotonic() >= deadline):
                return changes
            await self._poller.poll(self._wait_ms(deadline))

    async def wait_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until every broker has been snapshotted once (see StateView.wait_synced)."""
        deadline = None if timeout is None else _monotonic() + timeout
        while not self.core.synced:
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                return False
            await self.poll(_MAX_WAIT if remaining is None else min(remaining, _MAX_WAIT))
        return True

    async def follow(self, timeout: float | None = None) -> AsyncIterator[StateChange]:  # noqa: ASYNC109
        """Every change, as it happens, for ``timeout`` seconds (None: for ever)."""
        deadline = None if timeout is None else _monotonic() + timeout
        while deadline is None or _monotonic() < deadline:
            wait = _MAX_WAIT if deadline is None else max(0.0, deadline - _monotonic())
            for change in await self.poll(min(wait, _MAX_WAIT)):
                yield change

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sockets.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
