"""Creating sockets with every limit set explicitly, and binding safely after a kill -9."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq

from busd.config import Config
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


@dataclass(frozen=True, slots=True)
class PeerGuards:
    """How long a connection may take to become a ZMTP 3 peer, and to stay silent."""

    handshake_ms: int  # ZMQ_HANDSHAKE_IVL: greeting + READY within this, or closed
    heartbeat_ms: int  # ZMQ_HEARTBEAT_IVL: a PING this often; 0: no heartbeats
    heartbeat_timeout_ms: int  # ZMQ_HEARTBEAT_TIMEOUT (and _TTL): no traffic after a PING

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        sock.setsockopt(zmq.HANDSHAKE_IVL, self.handshake_ms)
        if self.heartbeat_ms:
            sock.setsockopt(zmq.HEARTBEAT_IVL, self.heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, self.heartbeat_timeout_ms)
            # The peer closes its side when it hears nothing from busd for this long.
            sock.setsockopt(zmq.HEARTBEAT_TTL, min(self.heartbeat_timeout_ms, 6_553_500))


def router(
    ctx: zmq.Context[zmq.Socket[bytes]],
    *,
    hwm: int,
    reply_hwm: int,
    max_frame: int,
    linger_ms: int,
    guards: PeerGuards,
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.SNDHWM, reply_hwm)
    # Replies are small: a bounded kernel buffer keeps a publisher that does not read them
    # from parking megabytes in the kernel before reply_hwm is reached.
    sock.setsockopt(zmq.SNDBUF, REPLY_SNDBUF)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame)
    sock.setsockopt(zmq.LINGER, linger_ms)
    # Replies to a vanished or full publisher fail loudly (EHOSTUNREACH/EAGAIN) so busd
    # can count them instead of libzmq dropping them silently.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    guards.apply(sock)
    _tcp_keepalive(sock)
    return sock


# Subscription messages libzmq takes from one connection per socket call. libzmq keeps
# every prefix it takes (XPUB_MANUAL) and does all of a closed connection's cleanup inside
# one of busd's calls, so this bounds how far a storm runs ahead of busd's caps and how long
# that cleanup holds the loop. Measured with a 100,000-prefix storm: 1,000 let it in whole
# (+110 MB) before busd's first cut, and a cut connection's cleanup took up to 0.4 s; 4 keeps
# both small. Not 1: with ZAP on, libzmq 4.3.5 then never delivers a connection's first
# subscription (measured). A subscriber's own SNDHWM (1,000) buffers a burst on its side.
SUBSCRIPTION_HWM = 4
REPLY_SNDBUF = 65536  # bytes per publisher connection (the kernel doubles it)


def xpub(
    ctx: zmq.Context[zmq.Socket[bytes]], *, hwm: int, linger_ms: int, guards: PeerGuards
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, SUBSCRIPTION_HWM)
    # Subscribers only send subscriptions: a topic prefix plus one byte.
    sock.setsockopt(zmq.MAXMSGSIZE, 4096)
    # busd applies each subscription itself, with caps (busd.transport.subscriptions).
    sock.setsockopt(zmq.XPUB_MANUAL, 1)
    sock.setsockopt(zmq.LINGER, linger_ms)
    guards.apply(sock)
    _tcp_keepalive(sock)
    return sock


# Snapshot reply messages queued per state client (each up to ``snapshot_part`` entries):
# past it a send answers EAGAIN and busd retries on a later wake-up (transport/snapshots.py).
STATE_SNDHWM = 32
STATE_REQUEST_BYTES = 4096  # a larger request frame drops the connection (requests are small)


def state_router(
    ctx: zmq.Context[zmq.Socket[bytes]], *, linger_ms: int, guards: PeerGuards
) -> zmq.Socket[bytes]:
    """The state endpoint's ROUTER (docs/protocol.md §3.2)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, STATE_SNDHWM)
    sock.setsockopt(zmq.RCVHWM, 64)
    sock.setsockopt(zmq.MAXMSGSIZE, STATE_REQUEST_BYTES)
    sock.setsockopt(zmq.LINGER, linger_ms)
    # A full or vanished client fails loudly (EAGAIN/EHOSTUNREACH) instead of libzmq
    # dropping the part silently, which would leave a hole in the snapshot.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    guards.apply(sock)
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


def broker_sockets(
    ctx: zmq.Context[zmq.Socket[bytes]], cfg: Config, curve: tuple[bytes, bytes] | None
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], zmq.Socket[bytes]]:
    """The broker task's ROUTER (ingress), XPUB (egress) and state ROUTER, with the limits
    and peer guards of ``cfg``, each through ZAP (``guard``); not bound yet."""
    linger = int(cfg.linger * 1000)
    guards = PeerGuards(
        handshake_ms=round(cfg.handshake_timeout * 1000),
        heartbeat_ms=round(cfg.heartbeat_interval * 1000),
        heartbeat_timeout_ms=round(cfg.heartbeat_timeout * 1000),
    )
    ingress = router(
        ctx,
        hwm=cfg.pub_hwm,
        reply_hwm=cfg.reply_hwm,
        max_frame=cfg.max_frame_bytes,
        linger_ms=linger,
        guards=guards,
    )
    egress = xpub(ctx, hwm=cfg.sub_hwm, linger_ms=linger, guards=guards)
    state = state_router(ctx, linger_ms=linger, guards=guards)
    for sock in (ingress, egress, state):
        guard(sock, curve)
    return ingress, egress, state


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
