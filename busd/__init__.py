"""busd: a brokered publish/subscribe message bus over ZeroMQ."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
