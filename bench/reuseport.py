"""Can several ZeroMQ ROUTER sockets share one TCP port? ``python -m bench.reuseport``

libzmq sets no ``SO_REUSEPORT`` on its TCP listeners, but takes a listening socket made by
the application through ``ZMQ_USE_FD``. Each ROUTER here (its own context, as a process of
its own would have) gets a socket made with ``SO_REUSEPORT``, bound and listening on the
same port; DEALERs connect and say hello; the script prints how many connections each
ROUTER got (the kernel spreads connections, not messages). docs/performance.md, "More than
one core", says what that would and would not give busd.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import zmq

ROUTERS = 2
DEALERS = 40


def split(routers: int = ROUTERS, dealers: int = DEALERS) -> list[int]:
    """Connections each of ``routers`` ROUTERs sharing one port got from ``dealers`` DEALERs."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    listeners: list[socket.socket] = []
    contexts: list[zmq.Context[Any]] = []
    sockets: list[zmq.Socket[Any]] = []
    try:
        for _ in range(routers):
            lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            lst.bind(("127.0.0.1", port))
            lst.listen(128)
            lst.setblocking(False)
            listeners.append(lst)
            ctx: zmq.Context[Any] = zmq.Context()
            router = ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.USE_FD, lst.fileno())
            router.bind(f"tcp://127.0.0.1:{port}")
            lst.detach()  # the descriptor is libzmq's now: it closes it with the ROUTER
            listeners.pop()
            contexts.append(ctx)
            sockets.append(router)
        client: zmq.Context[Any] = zmq.Context()
        contexts.append(client)
        for i in range(dealers):
            dealer = client.socket(zmq.DEALER)
            dealer.connect(f"tcp://127.0.0.1:{port}")
            dealer.send(b"hello %d" % i)
            sockets.append(dealer)
        got = [0] * routers
        deadline = time.monotonic() + 5.0
        while sum(got) < dealers and time.monotonic() < deadline:
            for k, router in enumerate(sockets[:routers]):
                while router.poll(10):
                    router.recv_multipart()
                    got[k] += 1
        return got
    finally:
        for sock in sockets:
            sock.close(linger=0)
        for ctx in contexts:
            ctx.term()
        for lst in listeners:
            lst.close()


def main() -> int:
    got = split()
    print(f"{DEALERS} DEALER connections to one port, per ROUTER: {got}")
    return 0 if all(got) and sum(got) == DEALERS else 1


if __name__ == "__main__":
    sys.exit(main())
