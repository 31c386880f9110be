"""Creating sockets with every limit set explicitly, and binding safely after a kill -9."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import zmq

from busd.transport.zap import ZAP_DOMAIN


class EndpointInUse(RuntimeError):
    """Another live process serves this endpoint; refusing to steal it."""


def clear_stale_ipc(endpoint: str) -> None:
    """Remove an ipc:// socket file left by a killed busd, but never a live one."""
    if not endpoint.startswith("ipc://"):
        return
    path = Path(endpoint[len("ipc://") :])
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(mode):
        raise EndpointInUse(f"{path} exists and is not a socket")
    import socket  # noqa: PLC0415 - only needed on this rare path

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: nobody listens
        return
    except OSError:
        return
    finally:
        probe.close()
    raise EndpointInUse(f"{endpoint} is served by another live process")


def router(
    ctx: zmq.Context[zmq.Socket[bytes]], *, hwm: int, max_frame: int, linger_ms: int
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame)
    sock.setsockopt(zmq.LINGER, linger_ms)
    # Replies to a vanished or full publisher fail loudly (EHOSTUNREACH/EAGAIN) so busd
    # can count them instead of libzmq dropping them silently.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # A peer that connects but never completes ZMTP (raw TCP, HTTP) is cut off quickly.
    sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)
    _tcp_keepalive(sock)
    return sock


def xpub(ctx: zmq.Context[zmq.Socket[bytes]], *, hwm: int, linger_ms: int) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    # Subscribers only send subscriptions: a topic prefix plus one byte.
    sock.setsockopt(zmq.MAXMSGSIZE, 4096)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)
    _tcp_keepalive(sock)
    return sock


def guard(sock: zmq.Socket[bytes], curve: tuple[bytes, bytes] | None) -> None:
    """Every connection through ZAP (so libzmq refuses ZMTP/1.0 and 2.0 peers); with
    ``curve`` (public, secret z85 keys) a CURVE server that admits only known client keys."""
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    if curve is not None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve[0])
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve[1])


def _tcp_keepalive(sock: zmq.Socket[bytes]) -> None:
    # Half-open connections (peer host gone) are found in ~1 minute, not hours.
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)


def bind(sock: zmq.Socket[bytes], endpoint: str) -> str:
    """Bind and return the resolved endpoint (the real port for ``tcp://host:0``)."""
    clear_stale_ipc(endpoint)
    sock.bind(endpoint)
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) else str(last)
