"""The metrics port: ``/metrics``, ``/healthz`` and ``/readyz`` over a minimal HTTP/1.1 server.

It runs on busd's own event loop rather than prometheus-client's server thread, so
``/healthz`` proves the loop is alive and a scrape reads the counters from the thread that
writes them. The listening socket is bound synchronously at start-up (``bind``), on the host
configured (loopback by default), so a taken port fails start-up instead of a task later.

Requests are small and few: one request per connection (``Connection: close``), headers
capped at 8 KiB, 5 s for the whole exchange, at most ``max_connections`` at once. At the cap
a new connection evicts the one that has waited longest without sending a request (silent
connections cannot hold the port against a health check); only when every slot is busy
answering is the new one closed unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from prometheus_client import CollectorRegistry

from busd.logs import RateLimitedLog, get
from busd.ops.health import Health
from busd.ops.metrics import CONTENT_TYPE, render
from busd.statistics import HttpStatistics

_log = get("http")
MAX_HEAD = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_INDEX = b"busd\n/metrics  Prometheus metrics\n/healthz  alive\n/readyz   ready to serve\n"


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on exactly ``host`` (never all interfaces by accident)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=64)
    sock.setblocking(False)
    return sock


class MetricsServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Health,
        *,
        max_connections: int = 64,
        timeout: float = 5.0,
    ):
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
        self.max_connections = max_connections
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._active = 0
        # Connections that have not sent a whole request head yet, oldest first.
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self.evicted = 0
        self._errors = RateLimitedLog(_log)
        self.requests = 0
        self.refused = 0

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def bind(self) -> None:
        """Bind now; raises OSError (e.g. the port is taken)."""
        self._sock = listen(self.host, self.port)
        self.port = int(self._sock.getsockname()[1])
        _log.info("metrics listening", extra={"address": self.address})

    def statistics(self) -> HttpStatistics:
        return HttpStatistics(
            requests_total=self.requests,
            connections_refused_total=self.refused,
            connections_evicted_total=self.evicted,
        )

    async def run(self) -> None:
        """Serve until cancelled (a supervised task: each run serves a dup of the socket).

        Error handling: a client that sends nothing useful, stalls or goes away loses its
        connection; an error while answering is logged at a limited rate and costs that
        request only. What ends this task (the server failing) is restarted by the
        supervisor on a new dup of the socket bound at start-up, which ``close`` closes.
        """
        assert self._sock is not None, "bind() first"
        server = await asyncio.start_server(self._serve, sock=self._sock.dup(), limit=MAX_HEAD)
        try:
            await server.serve_forever()
        finally:
            server.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= self.max_connections:
            if not self._waiting:
                self.refused += 1
                writer.close()
                return
            # Make room: the connection that has waited longest without sending a request
            # goes, never the new one. Silent connections cannot hold the port: a client that
            # sends its request at once (a health check) always gets in.
            victim = next(iter(self._waiting))
            del self._waiting[victim]
            victim.transport.abort()
            self.evicted += 1
        self._active += 1
        self._waiting[writer] = None
        try:
            # One deadline for the whole exchange: a client that does not read the answer
            # holds its slot no longer than one that sends nothing.
            async with asyncio.timeout(self.timeout):
                head = await reader.readuntil(b"\r\n\r\n")
                self._waiting.pop(writer, None)
                status, headers, body, head_only = self._answer(head)
                await self._respond(writer, status, headers, body, head_only)
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # a client that sends nothing useful just loses its connection
        except Exception as exc:
            self._errors.warning("http", "metrics request failed", error=repr(exc))
        finally:
            self._waiting.pop(writer, None)
            self._active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[int, dict[str, str], bytes, bool]:
        self.requests += 1
        if len(head) > MAX_HEAD:
            return 400, {}, b"request head too large\n", False
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, {}, b"bad request line\n", False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, {"Allow": "GET, HEAD"}, b"only GET and HEAD\n", False
        head_only = method == b"HEAD"
        if target == b"/metrics":
            return 200, {"Content-Type": CONTENT_TYPE}, render(self.registry), head_only
        if target == b"/healthz":
            return 200, {}, b"ok\n", head_only
        if target == b"/readyz":
            problems = self.health.problems()
            if problems:
                return 503, {}, ("not ready: " + "; ".join(problems) + "\n").encode(), head_only
            return 200, {}, b"ready\n", head_only
        if target == b"/":
            return 200, {}, _INDEX, head_only
        return 404, {}, b"not found: try /metrics, /healthz or /readyz\n", head_only

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
        body: bytes,
        head_only: bool,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            "Cache-Control: no-store",
        ]
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()
