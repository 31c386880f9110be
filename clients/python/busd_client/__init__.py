"""Python client for the busd message bus (docs/client.md)."""

from busd_client.aio import AsyncPublisher, AsyncSubscriber
from busd_client.aio_driver import AsyncReceipt
from busd_client.aio_pool import AsyncPoolPublisher, AsyncPoolReceipt, AsyncPoolSubscriber
from busd_client.aio_state import AsyncStateView
from busd_client.errors import (
    BusError,
    ClosedError,
    Disabled,
    NotReady,
    PublishTimeout,
    RateLimited,
    Rejected,
)
from busd_client.gaps import Gap
from busd_client.pool import PoolPublisher, PoolReceipt, PoolSubscriber
from busd_client.publisher import Publisher, Receipt
from busd_client.sockets import DEFAULT_PUB_ENDPOINT, DEFAULT_SUB_ENDPOINT
from busd_client.state_sockets import StateBroker
from busd_client.state_table import StateChange, StateEntry
from busd_client.state_view import StateView
from busd_client.subscriber import Subscriber
from busd_protocol.messages import DecodeError, Message, decode_message, new_id

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PUB_ENDPOINT",
    "DEFAULT_SUB_ENDPOINT",
    "AsyncPoolPublisher",
    "AsyncPoolReceipt",
    "AsyncPoolSubscriber",
    "AsyncPublisher",
    "AsyncReceipt",
    "AsyncStateView",
    "AsyncSubscriber",
    "BusError",
    "ClosedError",
    "DecodeError",
    "Disabled",
    "Gap",
    "Message",
    "NotReady",
    "PoolPublisher",
    "PoolReceipt",
    "PoolSubscriber",
    "PublishTimeout",
    "Publisher",
    "RateLimited",
    "Receipt",
    "Rejected",
    "StateBroker",
    "StateChange",
    "StateEntry",
    "StateView",
    "Subscriber",
    "decode_message",
    "new_id",
]
