"""Typed exceptions. Every message ends accepted or with one of these, which the caller sees."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BusError",
    "ClosedError",
    "Disabled",
    "NotReady",
    "PublishTimeout",
    "RateLimited",
    "Rejected",
    "rejection_from_reply",
]


class BusError(Exception):
    """Base of every error this library raises about a message or a connection."""

    # The message the error is about, when there is one (set by the publisher).
    id: str | None = None
    topic: str | None = None


class Rejected(BusError):
    """busd refused the message; ``code`` is stable (docs/protocol.md §2.1), ``reason`` is not."""

    def __init__(
        self, code: str, reason: str, seq: int | None = None, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.seq = seq
        self.extra: dict[str, Any] = dict(extra) if extra else {}


class RateLimited(Rejected):
    """A token bucket for ``key`` was empty; it holds a token again after ``retry_after_ms``."""

    def __init__(
        self,
        key: str,
        retry_after_ms: int,
        reason: str = "rate limited",
        seq: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("rate_limited", reason, seq, extra)
        self.key = key
        self.retry_after_ms = retry_after_ms


class Disabled(Rejected):
    """The rate for ``key`` is 0: an operator has stopped publishing under that key."""

    def __init__(
        self,
        key: str,
        reason: str = "disabled",
        seq: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("disabled", reason, seq, extra)
        self.key = key


class NotReady(Rejected):
    """That broker just started and is waiting for subscribers to reconnect (``not_ready``).

    Not a judgement of the message: it may be sent again after ``retry_after_ms`` or to
    another broker of a pool. The publishers retry it themselves within their timeout.
    """

    def __init__(
        self,
        retry_after_ms: int,
        reason: str = "not ready",
        seq: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("not_ready", reason, seq, extra)
        self.retry_after_ms = retry_after_ms


class PublishTimeout(BusError):
    """No reply came within the deadline.

    ``sent`` is False when the message never left this process (no connection to busd, or
    the socket stayed full): busd surely never saw it. When ``sent`` is True its fate is
    unknown: busd may or may not have accepted it.
    """

    def __init__(self, message: str, *, sent: bool, seq: int | None = None) -> None:
        super().__init__(message)
        self.sent = sent
        self.seq = seq


class ClosedError(BusError):
    """The publisher or subscriber was closed; the message's fate is unknown."""


def rejection_from_reply(item: Mapping[str, Any]) -> Rejected:
    """The typed exception for one rejection map of a reply (unknown codes stay ``Rejected``)."""
    code = item.get("code")
    reason = item.get("reason")
    seq = item.get("seq")
    code_s = code if isinstance(code, str) else "internal"
    reason_s = reason if isinstance(reason, str) else ""
    seq_i = seq if isinstance(seq, int) else None
    extra = {k: v for k, v in item.items() if k not in ("code", "reason", "seq")}
    key = item.get("key")
    key_s = key if isinstance(key, str) else ""
    after = item.get("retry_after_ms")
    after_i = after if isinstance(after, int) and after >= 0 else 0
    if code_s == "rate_limited":
        return RateLimited(key_s, after_i, reason_s, seq_i, extra)
    if code_s == "not_ready":
        return NotReady(after_i, reason_s, seq_i, extra)
    if code_s == "disabled":
        return Disabled(key_s, reason_s, seq_i, extra)
    return Rejected(code_s, reason_s, seq_i, extra)
