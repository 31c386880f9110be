"""The error kernel: pure decisions about a message's fate.

Contract (the import contracts in ``make lint`` and tests/test_layering.py enforce it):
- Imports only ``busd_protocol`` and the standard library: no zmq, asyncio, threading or
  prometheus_client, nothing of busd's I/O layers. No I/O, no clock reads: time comes in as
  an argument (monotonic seconds), frames come in as bytes and are decoded with
  ``busd_protocol``.
- Every function is deterministic given its arguments and the state of the objects it is
  called on, so it can be tested exhaustively and fast.
- A decision is either ``None`` (accept) or a ``Reject`` value carrying a stable ``Code``.
  A check that raises has a bug: the caller (the broker) answers ``internal``, counts it
  and logs its traceback at a limited rate; the kernel never catches an exception. That
  holds for the generated fast schema check too: its exception is not retried on the
  reference checker (a silent fallback would hide the bug and slow every such message).
- State that changes at run time (rate limits, schema sets) arrives as new immutable values
  that the owner swaps in between messages. Mutable state (token counts, traffic counters,
  the good-topic memo) belongs to the one task that calls ``Admission.decide``.

Modules: ``admission`` (the order of checks), ``buckets`` (the rate table),
``schemas`` (the schema gate and its traffic counters).
"""
