"""Structured logs: one line per event on stderr, JSON unless stderr is a terminal.

Per-message problems go through ``RateLimitedLog`` so a flood of bad input cannot flood the
log: each key logs at most ``burst`` lines per ``interval``; the rest are counted and the
count is reported on the next line that gets through.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


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


def setup(fmt: str = "auto", level: str = "info") -> None:
    """Configure the root ``busd`` logger; idempotent."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if use_json else _TextFormatter())
    root = logging.getLogger("busd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


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
