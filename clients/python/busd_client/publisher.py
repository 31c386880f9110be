"""The synchronous publisher to one busd: the sync driver over the single-broker strategy."""

from __future__ import annotations

import os
from typing import Any

import zmq

from busd_client.core import PublishCore
from busd_client.ledger import Ledger
from busd_client.single_broker import SingleBroker
from busd_client.sockets import DEFAULT_PUB_ENDPOINT
from busd_client.sync_driver import SyncDriver, SyncReceipt
from busd_protocol.schemas import SchemaSet

__all__ = ["Publisher", "Receipt"]


class Receipt(SyncReceipt):
    """The fate of one published message. ``result()`` waits for it.

    ``result(timeout=None)`` waits as long as the message can take (its reply deadline,
    plus the retry deadline); past a shorter ``timeout`` it raises PublishTimeout and the
    message stays pending.
    """

    __slots__ = ()


class Publisher(SyncDriver[Receipt]):
    """Publish to busd from one thread (a zmq socket must not be shared between threads).

    ``publish`` sends and returns a Receipt without waiting for the reply; at most
    ``window`` messages are in flight, so ``publish`` waits when busd falls behind.
    ``timeout`` bounds every wait for busd: a message with no reply within it fails with
    PublishTimeout. ``retry_deadline`` (seconds, None/0 = never) lets `rate_limited` (and,
    with ``wait_when_disabled``, `disabled`) refusals be retried until that long after
    publish. Replies are read during publish/flush/result calls: call ``flush`` at the end.
    ``schemas`` (a directory or a SchemaSet) checks every payload locally before it is sent.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_PUB_ENDPOINT,
        *,
        name: str = "python",
        window: int = 1000,
        timeout: float = 5.0,
        retry_deadline: float | None = None,
        wait_when_disabled: bool = False,
        context: zmq.Context[Any] | None = None,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 1.0,
        schemas: SchemaSet | str | os.PathLike[str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        core = PublishCore(
            SingleBroker(Ledger(), endpoint, float(timeout)),
            name=name,
            window=window,
            timeout=timeout,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
            schemas=schemas,
        )
        super().__init__(core, Receipt, context, reconnect_ivl, reconnect_ivl_max)
