"""Rate limits (docs/rates.md): the rate keys, the rate-file grammar, ``Limit`` and the
token bucket, defined once for busd's rates directory, its control socket and the clients.

A key is a file name in the rates directory. busd acts on three kinds of key:

- ``publish``: all traffic;
- ``publish.<prefix>``: the configured key with the longest prefix of the topic;
- ``publisher.<name>``: the envelope's ``publisher``.

A client's ``RateLimiter`` reads the same files and also accepts keys of its own (any file
name, ``check_file_name``): a service may limit ``"jobs"`` locally, busd ignores that file.

A rate file holds ``RATE`` or ``RATE BURST`` (messages per second, ASCII decimals) and
nothing else. ``0`` disables the key; the burst defaults to ``max(1, RATE)``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from busd_protocol.envelope import PUBLISHER_NAME, PUBLISHER_RULE

__all__ = [
    "GLOBAL_KEY",
    "IGNORED_SUFFIXES",
    "MAX_FILE_BYTES",
    "MAX_PREFIX_BYTES",
    "MAX_RATE",
    "NO_LIMITS",
    "ONE_TOKEN",
    "PREFIX_KEY",
    "PUBLISHER_KEY",
    "RATE_GRAMMAR",
    "EmptyRateFile",
    "Limit",
    "Limits",
    "RateFileError",
    "TokenBucket",
    "check_file_name",
    "check_key",
    "freeze",
    "parse_rate",
    "read_rate",
]

GLOBAL_KEY: Final = "publish"
PREFIX_KEY: Final = "publish."
PUBLISHER_KEY: Final = "publisher."
MAX_RATE: Final = 1e9  # messages per second; anything above is a typo, not a limit
MAX_FILE_BYTES: Final = 256  # a valid rate line is far shorter; a big file is not a rate file
# Files the rates directory ignores (editors' and atomic writers' temporary files).
IGNORED_SUFFIXES: Final = ("~", ".tmp", ".swp")
MAX_PREFIX_BYTES: Final = 255 - len(PREFIX_KEY)
# ``fullmatch`` rather than ``$``: in Python ``$`` also matches before a final newline,
# which would let ``"5\n\n"`` through.
RATE_GRAMMAR: Final = re.compile(rb"[0-9]+(?:\.[0-9]+)?(?:[ \t]+[0-9]+(?:\.[0-9]+)?)?[ \t]*\n?")
# Refills accumulate float error: 0.6 + 0.4 tokens may sum to 0.9999999999. A publisher that
# waits exactly retry_after_ms must pass, so a token is "there" within this tolerance.
ONE_TOKEN: Final = 1.0 - 1e-9

# A file name in the rates directory: no control characters, spaces or "/", 1-255 bytes.
_FILE_NAME = re.compile(r"[^\x00-\x20\x7f/]{1,255}")
# A prefix is part of a topic (no control characters, no spaces) and of a file name.
_PREFIX = re.compile(r"[^\x00-\x20\x7f/]+")


def check_file_name(key: str) -> str | None:
    """Why ``key`` cannot name a file in a rates directory, or ``None`` when it can."""
    if _FILE_NAME.fullmatch(key) is None or len(key.encode()) > 255 or key.startswith("."):
        return "not a file name in the rates directory (1-255 bytes, no '/', space or dot first)"
    return None


def check_key(key: str) -> str | None:
    """Why ``key`` is not one of busd's rate keys, or ``None`` when it is one."""
    if key == GLOBAL_KEY:
        return None
    if key.startswith(PREFIX_KEY):
        prefix = key[len(PREFIX_KEY) :]
        if _PREFIX.fullmatch(prefix) is None or len(prefix.encode()) > MAX_PREFIX_BYTES:
            return (
                f"publish.<prefix>: the prefix must be 1-{MAX_PREFIX_BYTES} bytes of a "
                "topic, without '/'"
            )
        if prefix.endswith(IGNORED_SUFFIXES):
            return "publish.<prefix>: the prefix may not end in '~', '.tmp' or '.swp'"
        return None
    if key.startswith(PUBLISHER_KEY):
        if PUBLISHER_NAME.fullmatch(key[len(PUBLISHER_KEY) :]) is None:
            return f"publisher.<name>: the name must be {PUBLISHER_RULE}"
        return None
    return "a key is 'publish', 'publish.<topic prefix>' or 'publisher.<name>'"


@dataclass(frozen=True, slots=True)
class Limit:
    """``rate`` messages per second with bursts up to ``burst``; ``rate == 0`` disables."""

    rate: float
    burst: float

    @staticmethod
    def of(rate: float, burst: float | None = None) -> Limit:
        """A checked limit; ``burst`` defaults to ``max(1, rate)`` (one second's worth)."""
        if burst is None:
            burst = max(1.0, float(rate))
        limit = Limit(float(rate), float(burst))
        problem = limit.problem()
        if problem is not None:
            raise ValueError(problem)
        return limit

    def problem(self) -> str | None:
        if not (math.isfinite(self.rate) and 0 <= self.rate <= MAX_RATE):
            return f"rate must be a number from 0 to {MAX_RATE:.0f}"
        if not (math.isfinite(self.burst) and 1 <= self.burst <= MAX_RATE):
            return f"burst must be a number from 1 to {MAX_RATE:.0f}"
        return None


Limits = Mapping[str, Limit]
NO_LIMITS: Limits = MappingProxyType({})


def freeze(limits: Mapping[str, Limit]) -> Limits:
    """A checked, read-only copy of ``limits``; raises ``ValueError`` on a bad key or value."""
    for key, limit in limits.items():
        problem = check_key(key) or limit.problem()
        if problem is not None:
            raise ValueError(f"{key}: {problem}")
    return MappingProxyType(dict(limits))


class RateFileError(ValueError):
    """A rate file's content is not ``RATE`` or ``RATE BURST``; the message says why."""

    kind = "content"


class EmptyRateFile(RateFileError):
    """No content yet: ``echo`` truncates before it writes."""

    kind = "empty"


def read_rate(content: bytes) -> Limit:
    """The limit a rate file's bytes say; raises ``RateFileError`` saying what is wrong."""
    if not content:
        raise EmptyRateFile("empty file (not yet written?)")
    if len(content) > MAX_FILE_BYTES:
        raise RateFileError(f"over {MAX_FILE_BYTES} bytes")
    if RATE_GRAMMAR.fullmatch(content) is None:
        raise RateFileError(
            f"expected 'RATE' or 'RATE BURST' as decimal numbers, got {shown(content[:40])}"
        )
    parts = content.split()
    rate = float(parts[0])
    burst = float(parts[1]) if len(parts) > 1 else max(1.0, rate)
    problem = Limit(rate, burst).problem()
    if problem is not None:
        raise RateFileError(problem)
    return Limit(rate, burst)


def shown(content: bytes) -> str:
    """File content as an operator reads it: text in quotes with JSON escapes ("nan\\n"),
    never a Python bytes repr (b'nan\\n')."""
    return json.dumps(content.decode("utf-8", "replace"), ensure_ascii=False)


def parse_rate(content: bytes) -> Limit | None:
    """The limit a rate file's bytes say, or None when they are not a valid rate file."""
    try:
        return read_rate(content)
    except RateFileError:
        return None


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; a new bucket starts full.

    Time is the ``now`` argument (monotonic seconds): nothing here reads a clock. A disabled
    bucket (``rate == 0``) never holds a token.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, limit: Limit, now: float, tokens: float | None = None) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = (limit.burst if tokens is None else tokens) if limit.rate > 0 else 0.0
        self.stamp = now

    def reconfigure(self, limit: Limit, now: float) -> None:
        self.refill(now)
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = min(self.tokens, limit.burst) if limit.rate > 0 else 0.0

    def refill(self, now: float) -> float:
        """Add what ``rate`` brought since the last refill; returns the tokens held."""
        elapsed = now - self.stamp
        if elapsed > 0:  # a monotonic clock never goes back; if it did, refill nothing
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        return self.tokens

    def wait(self) -> float:
        """Seconds until the bucket holds a token (after a refill); requires ``rate > 0``."""
        return (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Take a token and return 0.0, or return the seconds until one is there.

        Requires ``rate > 0``.
        """
        self.refill(now)
        if self.tokens >= ONE_TOKEN:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return self.wait()
