"""The error kernel: pure decisions about a message's fate.

Contract:
- Nothing in this package does I/O, reads a clock, or imports asyncio, zmq, msgpack or
  prometheus_client. Time comes in as an argument (monotonic seconds), bytes come in already
  decoded by ``busd.wire``.
- Every function is deterministic given its arguments and the state of the objects it is
  called on, so it can be tested exhaustively and fast.
- A decision is either ``None`` (accept) or a ``Reject`` value carrying a stable ``Code``.
- State that changes at run time (rate limits, schema sets) arrives as new immutable values
  that the owner swaps in between messages; token counts are the only mutable state, owned
  by the one task that calls ``Admission.decide``.
"""
