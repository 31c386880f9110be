"""The ZAP handler (ZeroMQ RFC 27): libzmq asks it about every new connection to busd.

busd always sets a ZAP domain on both of its sockets, and libzmq refuses ZMTP/1.0 and 2.0
peers on any socket with ZAP enabled. So two raw bytes cannot pose as an old ZeroMQ peer,
get a subscribe-all and read every topic, and bytes with no ZMTP greeting (an HTTP request,
garbage) never publish: such a connection is closed within the handshake.

- Authentication off: the sockets speak the NULL mechanism and this handler admits every
  NULL peer (its User-Id is ``anonymous``).
- Authentication on: the sockets are CURVE servers. A NULL or PLAIN peer fails the handshake
  (mechanism mismatch, counted by the socket monitor); a CURVE peer is admitted only when its
  public key is in the current key ring, and its User-Id is the key's name. Every message and
  subscription then carries that name, which is how busd knows who sent it.

pyzmq's ``zmq.auth.Authenticator`` does the ZAP protocol (request parsing, replies); this
module owns the ZAP socket and the loop, and answers from the key ring the control layer
keeps current (a revoked key makes no new connection from the next handshake on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import zmq
import zmq.auth
from zmq.utils import z85

from busd.statistics import ZapStatistics
from busd.transport.readiness import Readiness

ZAP_DOMAIN = "busd"
_log = logging.getLogger("busd.zap")

# A key ring: z85-encoded client public key -> identity name.
KeyRing = Mapping[bytes, str]


class _KeyRingProvider:
    """pyzmq's credentials-provider interface over the current key ring."""

    def __init__(self, ring: Callable[[], KeyRing]) -> None:
        self._ring = ring
        self.unknown = 0

    def callback(self, domain: str, key: bytes) -> bool:
        known = key in self._ring()
        if not known:
            self.unknown += 1
        return known


class ZapHandler(zmq.auth.Authenticator):
    """Answers ZAP requests on ``inproc://zeromq.zap.01`` of busd's context.

    ``ring`` None: authentication is off and NULL peers are admitted. Otherwise ``ring()``
    gives the key ring in force at each request.
    """

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], ring: Callable[[], KeyRing] | None
    ) -> None:
        super().__init__(ctx, log=_log)
        self._ring = ring
        self._provider: _KeyRingProvider | None = None
        self.requests = 0
        self.admitted = 0
        self._started = False
        if ring is not None:
            self._provider = _KeyRingProvider(ring)
            self.configure_curve_callback(ZAP_DOMAIN, self._provider)

    def curve_user_id(self, client_public_key: bytes) -> str:
        assert self._ring is not None, "CURVE requests come only with authentication on"
        return self._ring()[z85.encode(client_public_key)]

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self.requests += 1
        before = 0 if self._provider is None else self._provider.unknown
        await super().handle_zap_message(msg)
        if self._provider is None or self._provider.unknown == before:
            self.admitted += 1

    def start(self) -> None:
        super().start()
        self._started = True

    def stop(self) -> None:
        super().stop()
        self._started = False

    def statistics(self) -> ZapStatistics:
        unknown = 0 if self._provider is None else self._provider.unknown
        return ZapStatistics(self.admitted, unknown, self.requests)

    async def run(self) -> None:
        """Bind the ZAP socket and answer requests until cancelled.

        Error handling: a malformed request is answered (400) by the library and the loop
        goes on; any other error ends the task, and the supervisor restarts it with a new
        socket. While it is down libzmq lets a CURVE handshake complete with no User-Id:
        such a connection's messages carry no known identity and are refused ``forbidden``.
        """
        if not self._started:  # started by the app before binding; again after a crash
            self.start()
        sock: zmq.Socket[bytes] = self.zap_socket
        ready = Readiness([sock])
        try:
            while True:
                try:
                    msg = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    await ready.wait()
                    continue
                await self.handle_zap_message(msg)
        finally:
            ready.close()
            self.stop()  # a restart binds a new socket
