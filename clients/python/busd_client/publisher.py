"""The synchronous publisher to one busd: the sync driver over the single-broker strategy.

    with Publisher("tcp://127.0.0.1:7401", name="deployer") as pub:
        receipt = pub.publish("release.shop", "release", 2, {"slug": "...", "cmd": "bin/web"})
        pub.publish_wait("release.shop", "release", 2, data)  # waits; raises on failure
        failures = pub.flush()  # every reply; the errors since the last flush

``Publisher`` is ``SyncDriver`` (sync_driver.py: the calls, the sockets, the waiting) given
a ``SingleBroker`` (single_broker.py: the rules) through a ``PublishCore`` (core.py:
composition). docs/client.md has the whole contract.
"""

from __future__ import annotations

import os
from typing import Any

import zmq

from busd_client.core import DEFAULT_MAX_BATCH
from busd_client.single_broker import single_broker_core
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
    ``window`` messages are in flight, so ``publish`` waits when busd falls behind. Replies
    are read during publish/flush/result calls: call ``flush`` (or ``close``) at the end.

    - ``endpoint``: busd's publisher endpoint (``tcp://``, ``ipc://``);
    - ``name``: the ``publisher`` field of every envelope (busd's ``publisher.<name>`` rate
      key), ``[A-Za-z0-9._-]{1,64}``;
    - ``window``: messages unsettled at most;
    - ``timeout``: bounds every wait for busd: a message busd's connection does not take
      within it makes ``publish`` raise PublishTimeout(sent=False); a send with no reply
      within it fails with PublishTimeout(sent=True) (fate unknown);
    - ``retry_deadline`` (seconds after publish, None/0 = never) lets ``rate_limited``
      (and, with ``wait_when_disabled``, ``disabled``) refusals be resent until then; both
      can be overridden per publish;
    - ``context``: the zmq.Context to make the socket in (default: the shared instance);
    - ``reconnect_ivl``, ``reconnect_ivl_max``: libzmq's reconnect backoff, seconds;
    - ``schemas`` (a directory or a SchemaSet): every payload is checked locally, the way
      busd will, before it is sent;
    - ``max_batch``: messages that are due together (``publish_many``, or waiting for the
      socket) go out as one batch of at most this many, once busd said it takes batches
      (1: never); a message that can go at once goes alone, at once;
    - ``linger`` (seconds, default 0: never wait): let a message wait up to this long for
      others to fill a batch, for throughput; ``publish`` then returns before it is sent,
      and the batch goes when full, at the next call past ``linger``, or at ``flush``.
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
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        core = single_broker_core(
            endpoint,
            timeout,
            name=name,
            window=window,
            retry_deadline=retry_deadline,
            wait_when_disabled=wait_when_disabled,
            schemas=schemas,
            max_batch=max_batch,
            linger=linger,
        )
        super().__init__(core, Receipt, context, reconnect_ivl, reconnect_ivl_max)
