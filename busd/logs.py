"""Structured logs: one line per event on stderr, JSON unless stderr is a terminal.

Everything goes through the one handler ``setup`` installs on the root logger: busd's own
loggers, libraries' (``asyncio``, ...), ``warnings`` (as ``py.warnings``), exceptions
nothing caught (``sys.excepthook``, ``threading.excepthook``) and, on busd's loop, the
loop's exception handler (``catch_loop_errors``). When stderr is the journal
(``JOURNAL_STREAM`` names the stream fd 2 is), every line starts with its syslog priority
(``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug): journald strips the prefix
and files the line at that priority, so ``journalctl -p warning`` shows warnings and worse.

Per-message problems go through ``RateLimitedLog`` so a flood of bad input cannot flood the
log: each key logs at most ``burst`` lines per ``interval``; the rest are counted and the
count is reported on the next line that gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


def priority(level: int) -> int:
    """The sd-daemon(3) (syslog) priority of a logging level."""
    if level > logging.ERROR:
        return 2  # critical
    if level >= logging.ERROR:
        return 3
    if level >= logging.WARNING:
        return 4
    if level >= logging.INFO:
        return 6
    return 7  # debug


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v!r}" for k, v in vars(record).items() if k not in _RESERVED)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        text = f"{text} {fields}" if fields else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _JournalFormatter(logging.Formatter):
    """Another formatter's lines, each prefixed with the record's ``<priority>``."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


def stderr_is_journal(env: Mapping[str, str]) -> bool:
    """Whether fd 2 is the journal stream systemd connected (``JOURNAL_STREAM=dev:ino``); a
    child that inherited the variable but writes elsewhere gets plain lines."""
    dev, sep, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup(fmt: str = "auto", level: str = "info", env: Mapping[str, str] | None = None) -> None:
    """Send every logger's records, warnings and uncaught exceptions through one handler on
    stderr; idempotent. ``level`` applies to busd's loggers; others log warnings and up."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    formatter: logging.Formatter = _JsonFormatter() if use_json else _TextFormatter()
    if stderr_is_journal(os.environ if env is None else env):
        formatter = _JournalFormatter(formatter)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    busd = logging.getLogger("busd")
    busd.handlers[:] = []
    busd.setLevel(level.upper())
    busd.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    get("uncaught").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    get("uncaught").error(
        "uncaught exception in a thread",
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
        extra={"thread_name": args.thread.name if args.thread is not None else ""},
    )


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's errors (a task's exception never retrieved, a callback that raised ...) as
    one structured line, with the traceback; the objects involved by their repr, cut short."""
    exc = context.get("exception")
    fields = {
        key: repr(value)[:200]
        for key, value in context.items()
        if key not in ("message", "exception") and key not in _RESERVED
    }
    get("asyncio").error(
        str(context.get("message") or "asyncio error"),
        exc_info=exc if isinstance(exc, BaseException) else None,
        extra=fields,
    )


@contextlib.contextmanager
def catch_loop_errors(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """``loop_exception_handler`` on ``loop`` for the block; the previous handler after."""
    previous = loop.get_exception_handler()
    loop.set_exception_handler(loop_exception_handler)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"busd.{name}")


class RateLimitedLog:
    """At most ``burst`` lines per key per ``interval`` seconds (monotonic clock)."""

    def __init__(
        self, logger: logging.Logger, burst: int = 5, interval: float = 10.0, max_keys: int = 1024
    ):
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._max_keys = max_keys
        # key -> [window start, lines in window, suppressed since last line]
        self._windows: dict[str, list[float]] = {}

    def allow(self, key: str) -> int | None:
        """Take one line from ``key``'s budget: None when over it (the line is counted as
        suppressed), else how many lines were suppressed since the last one written.

        For callers that build a line's fields only when it will be written."""
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._max_keys:
                self._windows.clear()  # bounded memory beats perfect accounting
            window = self._windows[key] = [now, 0.0, 0.0]
        if now - window[0] >= self._interval:
            window[0], window[1] = now, 0.0
        if window[1] >= self._burst:
            window[2] += 1
            return None
        window[1] += 1
        suppressed = int(window[2])
        window[2] = 0.0
        return suppressed

    def warning(self, key: str, event: str, **fields: Any) -> bool:
        """Log unless over budget; returns whether the line was written."""
        suppressed = self.allow(key)
        if suppressed is None:
            return False
        self.write(logging.WARNING, event, suppressed, fields)
        return True

    def error(self, key: str, event: str, exc: BaseException, **fields: Any) -> bool:
        """Log ``exc`` with its traceback unless over budget; returns whether it was written."""
        suppressed = self.allow(key)
        if suppressed is None:
            return False
        self.write(logging.ERROR, event, suppressed, fields, exc)
        return True

    def write(
        self,
        level: int,
        event: str,
        suppressed: int,
        fields: dict[str, Any],
        exc: BaseException | None = None,
    ) -> None:
        """Write one line that ``allow`` let through, carrying its ``suppressed`` count."""
        if suppressed:
            fields["suppressed"] = suppressed
        self._logger.log(level, event, exc_info=exc, extra=fields)
