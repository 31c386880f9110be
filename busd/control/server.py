"""The control socket: JSON lines over a Unix stream socket, for operators and busdctl.

One request per line, ``{"cmd": "...", ...arguments}``; one reply per line, in order:
``{"ok": true, ...}`` or ``{"ok": false, "error": {"code": "...", "message": "..."}}``.
Error codes: ``bad_request`` (not a JSON object with a string ``cmd``, or a line too long),
``unknown_command``, ``bad_argument``, ``io_error`` (a file could not be written),
``busy`` (too many connections), ``internal`` (a bug in a handler; the server keeps serving).

The socket lives in a private directory (created mode 0700) with mode 0600. A flood of
requests cannot starve message traffic: connections are capped, handlers run a few at a time,
and the time spent answering is budgeted: on average at most ``loop_share`` (10 %) of wall
time, in slices of at most ``budget_burst`` (10 ms). Excess requests wait; none is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from busd.control.rates_dir import RatesDir, rates_statistics
from busd.kernel.buckets import RateTable
from busd.statistics import ControlStatistics, as_json
from busd_protocol.rates import check_key

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_SUN_PATH = 107  # sockaddr_un.sun_path minus the terminating NUL on Linux
log = logging.getLogger("busd.control")


class ControlError(Exception):
    """Raised by a handler: answered as ``{"ok": false, "error": {code, message}}``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ControlSocketError(RuntimeError):
    """The control socket cannot be created; the message says why and what to do."""


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class ControlServer:
    """Serves ``handlers`` (command name -> async function of the arguments) at ``path``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        handlers: Mapping[str, Handler],
        *,
        max_line: int = 65536,
        max_connections: int = 32,
        max_concurrent: int = 4,
        idle_timeout: float = 60.0,
        loop_share: float = 0.1,
        budget_burst: float = 0.01,
    ):
        self.path = Path(path)
        self.handlers: dict[str, Handler] = dict(handlers)
        self.max_line = max_line
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._slots = asyncio.Semaphore(max_concurrent)
        self.loop_share = loop_share
        self.budget_burst = budget_burst
        self._budget = budget_burst  # seconds of answering allowed now; may go negative
        self._stamp = time.monotonic()
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._idle: dict[asyncio.StreamWriter, None] = {}  # waiting for a request, oldest first
        self.evicted_connections = 0
        self.connections = 0
        self.refused_connections = 0
        self.requests = 0
        self.errors = 0
        self.internal_errors = 0

    def statistics(self) -> ControlStatistics:
        return ControlStatistics(
            connections_total=self.connections,
            connections_refused_total=self.refused_connections,
            connections_evicted_total=self.evicted_connections,
            connections_open=len(self._writers),
            requests_total=self.requests,
            errors_total=self.errors,
            internal_errors_total=self.internal_errors,
        )

    async def start(self) -> None:
        """Bind the socket; raises ControlSocketError when another busd answers on it."""
        if len(os.fsencode(self.path)) > MAX_SUN_PATH:
            raise ControlSocketError(
                f"control socket path {self.path} is over "
                f"{MAX_SUN_PATH} bytes; choose a shorter --control"
            )
        self._private_directory()
        await self._remove_stale_socket()
        self._server = await asyncio.start_unix_server(
            self._serve, path=os.fspath(self.path), limit=self.max_line
        )
        # The directory is private, so the moment before this chmod exposes nothing.
        os.chmod(self.path, 0o600)
        self._inode = os.stat(self.path).st_ino
        log.info("control socket listening", extra={"path": str(self.path)})

    async def run(self) -> None:
        """Serve until cancelled, then close: a supervised task. Starts the server unless
        ``start`` was called already (call it at startup to fail fast).

        Error handling: each connection is its own task (``_serve``): a client that goes
        away or stops reading loses only its connection; a bad request is answered with
        its error code, a handler's bug with ``internal``, and serving goes on. What ends
        this task (the listening socket failing) is restarted by the supervisor, which
        binds the socket again.
        """
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:  # never remove a successor's socket
                self.path.unlink()

    def _private_directory(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        elif directory.stat().st_mode & 0o077:
            log.warning(
                "control socket directory is accessible to other users",
                extra={"path": str(directory)},
            )

    async def _remove_stale_socket(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(
                f"{self.path} exists and is not a socket; remove it or choose another --control"
            )
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(os.fspath(self.path)), 2.0
            )
        except (ConnectionRefusedError, FileNotFoundError):
            self.path.unlink(missing_ok=True)  # left by a busd killed with -9
            log.info("removed a stale control socket", extra={"path": str(self.path)})
            return
        except (OSError, TimeoutError) as exc:
            raise ControlSocketError(f"cannot check {self.path}: {exc}") from exc
        writer.close()
        raise ControlSocketError(
            f"another busd is serving the control socket {self.path}; "
            "stop it or choose another --control"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_connections:
            if not self._idle:
                self.refused_connections += 1
                with contextlib.suppress(OSError):
                    writer.write(_error("busy", f"over {self.max_connections} control connections"))
                    writer.close()
                return
            # Make room: the connection idle the longest goes (a client reconnects when it
            # needs to), so held connections cannot lock the operator out.
            victim = next(iter(self._idle))
            del self._idle[victim]
            self._writers.discard(victim)
            victim.transport.abort()
            self.evicted_connections += 1
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._conversation(reader, writer)
        except (OSError, TimeoutError):
            pass  # the client went away or stopped reading: nothing to answer
        finally:
            self._idle.pop(writer, None)
            self._writers.discard(writer)
            writer.close()

    async def _conversation(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one connection's requests in order until it ends.

        Error handling: a request that is not JSON or too long is answered ``bad_request``;
        an idle or vanished client (OSError, TimeoutError) ends this conversation only.
        """
        while True:
            self._idle[writer] = None  # idle until a request comes; oldest first
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), self.idle_timeout)
            except asyncio.IncompleteReadError as exc:
                if not exc.partial.strip():
                    return  # a clean end of the conversation
                line = exc.partial  # a last request without its newline: still answer it
            except asyncio.LimitOverrunError:
                self.errors += 1
                writer.write(_error("bad_request", f"request line over {self.max_line} bytes"))
                await asyncio.wait_for(writer.drain(), self.idle_timeout)
                return
            self._idle.pop(writer, None)
            await self._paced()
            async with self._slots:
                started = time.monotonic()
                reply = await self._answer(line)
                # Wall time, so a handler awaiting a thread (fsync) is charged too: control
                # commands may be slower, message traffic is never.
                self._budget -= time.monotonic() - started
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
            if reader.at_eof():
                return

    async def _paced(self) -> None:
        """Wait until the time budget for answering is positive again.

        Error handling: nothing here can fail (clock reads and sleeps).
        """
        while True:
            now = time.monotonic()
            self._budget = min(
                self.budget_burst, self._budget + max(0.0, now - self._stamp) * self.loop_share
            )
            self._stamp = now
            if self._budget > 0:
                return
            await asyncio.sleep(-self._budget / self.loop_share)

    async def _answer(self, line: bytes) -> bytes:
        self.requests += 1
        try:
            request = json.loads(line, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            self.errors += 1
            return _error("bad_request", f"not a JSON object: {exc}")
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            self.errors += 1
            return _error("bad_request", 'expected a JSON object with a string "cmd"')
        cmd = request.pop("cmd")
        handler = self.handlers.get(cmd)
        if handler is None:
            self.errors += 1
            known = ", ".join(sorted(self.handlers))
            return _error("unknown_command", f"unknown command {cmd[:64]!r}; known: {known}")
        try:
            result = await handler(request)
            return _encode({"ok": True, **{k: v for k, v in result.items() if k != "ok"}})
        except ControlError as exc:
            self.errors += 1
            return _error(exc.code, exc.message)
        except Exception:  # a bug in one handler must not end the server
            self.errors += 1
            self.internal_errors += 1
            log.exception("control command failed", extra={"cmd": cmd})
            return _error("internal", f"command {cmd!r} failed; see the busd log")


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _error(code: str, message: str) -> bytes:
    return _encode({"ok": False, "error": {"code": code, "message": message}})


def _arguments(
    args: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    missing = [name for name in required if name not in args]
    unknown = sorted(set(args) - set(required) - set(optional))
    if missing:
        raise ControlError("bad_argument", f"missing argument(s): {', '.join(missing)}")
    if unknown:
        raise ControlError("bad_argument", f"unknown argument(s): {', '.join(unknown)}")


def _key(args: dict[str, Any]) -> str:
    key = args["key"]
    if not isinstance(key, str):
        raise ControlError("bad_argument", "key must be a string")
    problem = check_key(key)
    if problem is not None:
        raise ControlError("bad_argument", f"bad key {key[:300]!r}: {problem}")
    return key


def rate_handlers(
    table: RateTable, rates_dir: RatesDir, clock: Callable[[], float] = time.monotonic
) -> dict[str, Handler]:
    """``rates.list``, ``rates.set`` and ``rates.clear``. Run them on the event loop that
    owns ``table``; ``clock`` must be the clock the broker passes to ``admit``."""

    async def rates_list(args: dict[str, Any]) -> dict[str, Any]:
        _arguments(args, ())
        limits = [
            {
                "key": row.key,
                "rate": row.rate,
                "burst": row.burst,
                "tokens": round(row.tokens, 3),
                "throttled_recent": row.throttled_recent,
                "throttled_total": row.throttled_total,
                "disabled_recent": row.disabled_recent,
                "disabled_total": row.disabled_total,
            }
            for row in table.snapshot(clock())
        ]
        errors = [
            {
                "file": e.name,
                "kind": e.kind,
                "message": e.message,
                "since": round(e.since, 3),
                "count": e.count,
            }
            for e in rates_dir.errors()
        ]
        return {
            "dir": str(rates_dir.path),
            "limits": limits,
            "errors": errors,
            "statistics": as_json(rates_statistics(table, rates_dir)),
        }

    async def rates_set(args: dict[str, Any]) -> dict[str, Any]:
        _arguments(args, ("key", "rate"), ("burst",))
        key = _key(args)
        try:
            limit = await rates_dir.set(key, args["rate"], args.get("burst"))
        except ValueError as exc:
            raise ControlError("bad_argument", str(exc)) from None
        except OSError as exc:
            raise ControlError(
                "io_error", f"cannot write {rates_dir.path / key}: {exc.strerror or exc}"
            ) from None
        return {
            "key": key,
            "rate": limit.rate,
            "burst": limit.burst,
            "file": str(rates_dir.path / key),
        }

    async def rates_clear(args: dict[str, Any]) -> dict[str, Any]:
        _arguments(args, ("key",))
        key = _key(args)
        try:
            cleared = await rates_dir.clear(key)
        except OSError as exc:
            raise ControlError(
                "io_error", f"cannot remove {rates_dir.path / key}: {exc.strerror or exc}"
            ) from None
        return {"key": key, "cleared": cleared}

    return {"rates.list": rates_list, "rates.set": rates_set, "rates.clear": rates_clear}
