"""A small synchronous client for busd's control socket (JSON lines over a Unix socket).

    with ControlClient("./var/run/control.sock") as control:
        control.call("rates.set", key="publish", rate="500")
        print(control.call("rates.list")["limits"])

``call`` returns the reply object without its ``"ok"`` member and raises ``ControlError``
(with busd's stable ``code``) when busd answers ``{"ok": false}``, or ``ControlUnavailable``
when busd cannot be reached or does not answer within ``timeout`` seconds.
"""

from __future__ import annotations

import json
import os
import socket
from types import TracebackType
from typing import Any

__all__ = ["DEFAULT_CONTROL", "ControlClient", "ControlError", "ControlUnavailable"]

DEFAULT_CONTROL = "./var/run/control.sock"
MAX_REPLY_BYTES = 16 * 1024 * 1024


class ControlError(Exception):
    """busd refused a control command; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ControlUnavailable(ControlError):
    """No answer: busd is not running, the path is wrong, or it timed out."""

    def __init__(self, message: str):
        super().__init__("unavailable", message)


class ControlClient:
    """One connection, opened on first use and reopened after a failure."""

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout: float = 5.0):
        self.path = (
            os.fspath(path)
            if path is not None
            else (os.environ.get("BUSD_CONTROL") or DEFAULT_CONTROL)
        )
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        line = json.dumps({"cmd": cmd, **args}, allow_nan=False).encode() + b"\n"
        reused = self._sock is not None
        try:
            reply = self._exchange(line)
        except ControlUnavailable:
            if not reused:
                raise
            # busd closes idle connections: a reused one may be gone. Retry once, fresh.
            self.close()
            reply = self._exchange(line)
        if reply.get("ok") is True:
            return {k: v for k, v in reply.items() if k != "ok"}
        error = reply.get("error")
        if not isinstance(error, dict):
            raise ControlError("bad_reply", f"busd sent a reply without ok/error: {reply!r}")
        raise ControlError(str(error.get("code", "unknown")), str(error.get("message", "")))

    def _exchange(self, line: bytes) -> dict[str, Any]:
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.path)
                except BaseException:
                    sock.close()
                    raise
                self._sock = sock
            self._sock.sendall(line)
            raw = self._read_line(self._sock)
        except (OSError, TimeoutError) as exc:
            self.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ControlUnavailable(
                f"cannot talk to busd at {self.path}: {reason or 'timed out'}"
            ) from exc
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            self.close()
            raise ControlError("bad_reply", f"busd sent a line that is not JSON: {exc}") from exc
        if not isinstance(reply, dict):
            self.close()
            raise ControlError("bad_reply", "busd sent a reply that is not a JSON object")
        return reply

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise OSError(f"reply over {MAX_REPLY_BYTES} bytes")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(0, "busd closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line
