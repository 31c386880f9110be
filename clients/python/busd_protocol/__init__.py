"""busd's protocol: every fact of docs/protocol.md, defined once, for the daemon and clients.

Contract (enforced by the import contracts in ``make lint`` and by
tests/test_layering.py, which imports this package in a fresh interpreter):
- Pure values and functions: no sockets, no clocks read except where a function says so
  (``new_id`` and the default ``ts`` of ``encode_envelope``), no threads, no event loop.
- Imports only the standard library and msgpack (msgpack only where bytes are encoded or
  decoded). Never zmq, asyncio, threading, busd or busd_client.
- Both busd and busd_client import from here; nothing here imports either of them, so a
  client in another language has one place to read the rules from besides docs/protocol.md.
"""
