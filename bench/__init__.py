"""busd's benchmark harness: the same workloads against busd and the brokers users would pick
instead (pyzmq PUB/SUB, zmq.proxy, NATS, Redis), run with ``python -m bench``.

Every publisher and subscriber runs in its own process (``bench.worker``) so no GIL is shared;
every server is started by the harness on free loopback ports and stopped at the end.
See docs/performance.md for how to read the output.
"""
