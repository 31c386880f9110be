"""One broker as the state view's core sees it: its connections, its snapshot attempt and
its place in its stream (state_core.py drives it). Plain state."""

from __future__ import annotations

from typing import Literal

from busd_protocol.messages import Message

__all__ = ["BACKOFF_MIN", "Link", "Live", "Phase"]

Phase = Literal["waiting", "requesting", "live", "done"]
Live = tuple[bytes, bytes, int, int]  # a live message: topic, envelope, epoch, seq
BACKOFF_MIN = 0.2  # seconds before the first retry of a failed snapshot (doubling to 5 s)


class Link:
    """One broker: its connections, its snapshot attempt and its place in its stream."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name  # the state endpoint: how changes and statistics name the broker
        self.phase: Phase = "waiting"
        self.dealer_up = False
        self.sub_up = False
        self.sub_events = 0  # SUB connection events seen (an attempt spans none)
        self.epoch: int | None = None  # the epoch the view is synced to
        self.reported: int | None = None  # the last epoch seen (restarts reported once)
        self.req = 0
        self.token: bytes | None = None
        self.mark = 0  # sub_events when the token was subscribed
        self.progress = 0.0  # when the attempt last heard from busd
        self.parts: list[tuple[Message, int, int]] = []  # held until the end gives rules
        self.present: set[tuple[str | int, ...]] = set()  # keys this attempt's parts hold
        self.received = 0  # entries in this attempt's parts
        self.next_part = 0
        self.buffer: list[Live] = []
        self.positions: dict[bytes, int] = {}  # topic -> last seq applied (epoch ``epoch``)
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN
        self.snapshots = 0  # applied
        self.failures = 0
        self.error = ""  # the last failure, "" once synced again
        self.refused = ""  # the code of a final refusal (forbidden, bad_request), "" after

    def statistics(self) -> dict[str, object]:
        return {
            "broker": self.name,
            "phase": self.phase,
            "epoch": self.epoch,
            "connected": self.dealer_up and self.sub_up,
            "snapshots": self.snapshots,
            "failures": self.failures,
            "error": self.error,
        }
