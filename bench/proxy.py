"""zmq.proxy between an XSUB (publishers connect) and an XPUB (subscribers connect).

Run by the harness as ``python -m bench.proxy XSUB_ENDPOINT XPUB_ENDPOINT``; the forwarding
loop is libzmq's, in C. Default HWMs, as a user would get them. Stopped by SIGTERM.
"""

from __future__ import annotations

import sys

import zmq


def main() -> int:
    xsub_endpoint, xpub_endpoint = sys.argv[1], sys.argv[2]
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    xsub.bind(xsub_endpoint)
    xpub.bind(xpub_endpoint)
    zmq.proxy(xsub, xpub)  # returns only on error; SIGTERM ends the process
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
