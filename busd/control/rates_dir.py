"""The rates directory: one file per rate key, read off the hot path, the single truth.

A file named by its key (``publish``, ``publish.release``, ``publisher.deployer``) holds
``RATE`` or ``RATE BURST`` in messages per second, ASCII decimal
(the format is defined once, in ``busd_protocol.rates``).
``0`` disables the key; no file means unlimited.

What the watcher does with what it finds (each poll, every ``poll_interval`` seconds):

- a changed file (inode, size, mtime or ctime differ, or it changed in the last two seconds,
  where a rewrite could keep all four) is re-read; a good value is applied and logged with
  old value, new value and source;
- bad content, an empty file (``echo`` truncates before it writes: "not yet written"), a
  file that cannot be read or is not a regular file: the last good value stays in force; the
  error is logged, counted and listed by ``errors()`` until the file is fixed; such files are
  re-read at every poll;
- a file deleted from the directory clears that key (unlimited);
- the directory missing: every last good value stays in force and the error is reported;
  when the directory comes back (recreated), files found there apply; a key whose file is
  missing from the recreated directory keeps its last good value, reported as an error,
  until a file for it appears or ``clear`` drops it. A kill switch is never lost by accident;
- names that are not rate keys are reported; editor and temporary files are ignored:
  names starting with ``.`` or ``#`` or ending with ``~``, ``.tmp`` or ``.swp``.

Reading happens in a worker thread (a hung filesystem must not stall the event loop); the
``on_change`` callback runs on the event loop with the new immutable limits value.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from busd.kernel.buckets import RateTable
from busd.statistics import RatesDirStatistics, RatesStatistics

# The rate-file format and its errors are the client library's, re-exported here.
from busd_protocol.rates import (
    IGNORED_SUFFIXES,
    MAX_FILE_BYTES,
    NO_LIMITS,
    EmptyRateFile,
    Limit,
    Limits,
    RateFileError,
    check_key,
    read_rate,
)

__all__ = [
    "Change",
    "EmptyRateFile",
    "RateFileError",
    "RatesDir",
    "decimal_text",
    "parse_rate",
    "rate_file_text",
]

# One number of the rate-file grammar: what the control socket may write into a file.
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
RACY_NS = 2_000_000_000  # a file modified this recently is re-read even if its stat matches
TEMP_SUFFIX = ".busd.tmp"
STALE_TEMP_SECONDS = 60.0

ChangeCallback = Callable[[Limits, "tuple[Change, ...]"], None]
log = logging.getLogger("busd.rates")


def parse_rate(data: bytes) -> Limit:
    """The limit a rate file holds; raises ``RateFileError`` (``EmptyRateFile``) saying what
    is wrong. The format itself is ``busd_protocol.rates.read_rate``: one definition."""
    limit = read_rate(data)
    return Limit(limit.rate, limit.burst)


def decimal_text(value: object, what: str) -> str:
    """``value`` (an int, a finite float or a decimal string) as grammar-conforming text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what} must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be a finite number")
        value = format(Decimal(repr(value)), "f")  # never an exponent: 1e-07 -> 0.0000001
    text = str(value)
    if _NUMBER.fullmatch(text) is None:
        raise ValueError(f"{what} must be a decimal number >= 0 like 500 or 0.5, got {text!r}")
    return text


def rate_file_text(rate: object, burst: object | None = None) -> tuple[str, Limit]:
    """The content ``set`` writes, checked by the same parser that reads it back."""
    text = decimal_text(rate, "rate")
    if burst is not None:
        text += " " + decimal_text(burst, "burst")
    text += "\n"
    try:
        return text, parse_rate(text.encode())
    except RateFileError as exc:
        raise ValueError(str(exc)) from None


def ignored(name: str) -> bool:
    return name.startswith((".", "#")) or name.endswith(IGNORED_SUFFIXES)


def show(limit: Limit | None) -> str:
    return "unlimited" if limit is None else f"{limit.rate:g}/s burst {limit.burst:g}"


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    old: Limit | None
    new: Limit | None
    source: str  # "file" or "socket"


@dataclass(frozen=True, slots=True)
class FileError:
    """A problem found in the directory; ``name`` is "" for the directory itself."""

    name: str
    kind: str  # directory, name, empty, content, unreadable, not_a_file, orphan
    message: str
    since: float  # wall-clock seconds, for display only
    count: int  # times observed (a new observation is a changed file or a new error)


@dataclass(frozen=True, slots=True)
class _Seen:
    signature: tuple[int, int, int, int]
    dir_gen: int  # the directory generation the key was last read in
    error: bool


class RatesDir:
    """Watches one directory. Mutated only by ``scan`` (serialized by ``refresh``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        on_change: ChangeCallback | None = None,
        poll_interval: float = 0.25,
    ):
        self.path = Path(path)
        self.poll_interval = poll_interval
        self._on_change = on_change
        self._lock = asyncio.Lock()
        self._limits: Limits = NO_LIMITS
        self._seen: dict[str, _Seen] = {}
        self._fingerprints: dict[str, object] = {}
        self._pending: tuple[Change, ...] = ()
        self._errors: Mapping[str, FileError] = MappingProxyType({})
        # An open descriptor of the directory last listed: it pins the inode, so a deleted
        # and recreated directory always has a different one and is told apart.
        self._dir_fd: int | None = None
        self._dir_gen = 0
        self.scans = 0
        self.changes = 0
        self.errors_seen = 0

    @property
    def limits(self) -> Limits:
        return self._limits

    def errors(self) -> tuple[FileError, ...]:
        return tuple(self._errors[name] for name in sorted(self._errors))

    def statistics(self) -> RatesDirStatistics:
        return RatesDirStatistics(self.scans, self.changes, self.errors_seen, len(self._errors))

    # -- asyncio side -------------------------------------------------------------------

    async def start(self) -> None:
        """Create the directory if needed and apply what it holds: call before traffic."""
        await asyncio.to_thread(self.prepare)
        await self.refresh()

    async def run(self) -> None:
        """Poll forever.

        Error handling: OS errors and bad files are recorded and retried at every poll (the
        last good values stay in force); anything else is a bug (or raised by
        ``on_change``) and ends the task for its supervisor to restart; calling ``run``
        again resumes from the state kept, undelivered changes included.
        """
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_interval)

    async def refresh(self, sources: Mapping[str, str] | None = None) -> tuple[Change, ...]:
        """Scan now (in a worker thread) and hand any change to ``on_change``."""
        async with self._lock:
            changes = await asyncio.to_thread(self.scan, sources)
            self._notify(changes)
            return changes

    async def set(self, key: str, rate: object, burst: object | None = None) -> Limit:
        """Write ``KEY`` atomically and apply it; raises ValueError or OSError."""
        text, limit = rate_file_text(rate, burst)
        async with self._lock:
            await asyncio.to_thread(self.write, key, text)
            self._notify(await asyncio.to_thread(self.scan, {key: "socket"}))
        return limit

    async def clear(self, key: str) -> bool:
        """Remove ``KEY``'s file and its limit; returns whether a limit was in force."""
        async with self._lock:
            await asyncio.to_thread(self.remove, key)
            changes = await asyncio.to_thread(self.scan, {key: "socket"}, key)
            self._notify(changes)
            return any(change.key == key for change in changes)

    def _notify(self, changes: tuple[Change, ...]) -> None:
        # Changes stay pending until on_change returns: if it raised, the next refresh (after
        # a restart of the task, say) delivers them, so the table never misses a change.
        self._pending += changes
        if self._pending and self._on_change is not None:
            self._on_change(self._limits, self._pending)
            self._pending = ()

    # -- file side (worker thread) ------------------------------------------------------

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_TEMP_SECONDS
        for entry in os.scandir(self.path):
            # Our own temp files left by a kill -9; another busd's fresh one is left alone.
            with contextlib.suppress(OSError):  # gone already: nothing to clean
                if entry.name.endswith(TEMP_SUFFIX) and entry.stat().st_mtime < cutoff:
                    Path(entry.path).unlink(missing_ok=True)

    def write(self, key: str, text: str) -> None:
        problem = check_key(key)
        if problem is not None:
            raise ValueError(problem)
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".busd-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path / key)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._sync_dir()

    def remove(self, key: str) -> None:
        problem = check_key(key)
        if problem is not None:
            raise ValueError(problem)
        try:
            (self.path / key).unlink()
        except FileNotFoundError:
            return
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)  # the rename or unlink itself survives a crash
        finally:
            os.close(fd)

    def scan(
        self, sources: Mapping[str, str] | None = None, forget: str | None = None
    ) -> tuple[Change, ...]:
        """One pass over the directory; returns the changes applied to ``limits``.

        ``sources`` names the source of a key's change when not "file"; ``forget`` is a key
        whose missing file clears its limit even after the directory was recreated."""
        self.scans += 1
        errors = dict(self._errors)
        try:
            dir_stat = os.stat(self.path)
            if not stat.S_ISDIR(dir_stat.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
            names = [entry.name for entry in os.scandir(self.path)]
        except OSError as exc:
            self._note(
                errors,
                "",
                "directory",
                f"cannot list {self.path}: {exc.strerror or exc}; last good values kept",
            )
            self._errors = MappingProxyType(errors)
            return ()
        dir_gen = self._pin_directory(dir_stat)
        if errors.pop("", None) is not None:
            log.warning("rates directory is back", extra={"path": str(self.path)})
        now_ns = time.time_ns()
        updates: dict[str, Limit | None] = {}
        present: set[str] = set()
        for name in names:
            if ignored(name):
                continue
            present.add(name)
            if check_key(name) is not None:
                self._note(errors, name, "name", f"not a rate key: {check_key(name)}")
                continue
            if not self._read(name, dir_gen, now_ns, errors, updates):
                present.discard(name)  # deleted since the listing: as if never listed
        orphans = set()
        for key in self._limits.keys() - present:
            seen = self._seen.get(key)
            if key == forget or (seen is not None and seen.dir_gen == dir_gen):
                updates[key] = None  # deleted by the operator: unlimited
            else:
                orphans.add(key)
                self._note(
                    errors,
                    key,
                    "orphan",
                    "file missing from the recreated directory; "
                    "last good value kept (`busdctl rate clear` drops it)",
                )
        for name in set(errors) - present - orphans:
            del errors[name]  # the file is gone: nothing left to report
        for name in set(self._seen) - present:
            del self._seen[name]
        for name in set(self._fingerprints) - set(errors):
            del self._fingerprints[name]
        self._errors = MappingProxyType(errors)
        return self._apply(updates, sources or {})

    def _pin_directory(self, dir_stat: os.stat_result) -> int:
        """The generation of the directory now at ``path``; a new one when it was recreated."""
        if self._dir_fd is not None:
            held = os.fstat(self._dir_fd)
            if (held.st_dev, held.st_ino) == (dir_stat.st_dev, dir_stat.st_ino):
                return self._dir_gen
            log.warning("rates directory was recreated", extra={"path": str(self.path)})
            os.close(self._dir_fd)
            self._dir_fd = None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return self._dir_gen + 1  # not pinned: the next scan retries
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (dir_stat.st_dev, dir_stat.st_ino):
            os.close(fd)  # swapped again between stat and open: settle at the next scan
            return self._dir_gen + 1
        self._dir_fd = fd
        self._dir_gen += 1
        return self._dir_gen

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _read(
        self,
        key: str,
        dir_gen: int,
        now_ns: int,
        errors: dict[str, FileError],
        updates: dict[str, Limit | None],
    ) -> bool:
        """Read one key's file into ``updates`` or ``errors``; False if it is gone."""
        path = self.path / key
        try:
            st = os.stat(path)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            seen = self._seen.get(key)
            if (
                seen is not None
                and seen.signature == signature
                and not seen.error
                and seen.dir_gen == dir_gen
                and now_ns - st.st_mtime_ns > RACY_NS
            ):
                return True
            if not stat.S_ISREG(st.st_mode):
                raise (
                    IsADirectoryError(errno.EISDIR, "not a regular file")
                    if stat.S_ISDIR(st.st_mode)
                    else OSError(errno.EINVAL, "not a regular file")
                )
            # O_NONBLOCK: a FIFO swapped in after the stat must not hang the reader.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "not a regular file")
                data = os.read(fd, MAX_FILE_BYTES + 1)
            finally:
                os.close(fd)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(path):
                return False
            kind = "unreadable" if exc.errno not in (errno.EISDIR, errno.EINVAL) else "not_a_file"
            self._seen[key] = _Seen((0, 0, 0, 0), dir_gen, True)
            self._note(
                errors, key, kind, f"cannot read: {exc.strerror or exc}; last good value kept"
            )
            return True
        try:
            limit = parse_rate(data)
        except RateFileError as exc:
            self._seen[key] = _Seen(signature, dir_gen, True)
            self._note(errors, key, exc.kind, f"{exc}; last good value kept", signature)
            return True
        self._seen[key] = _Seen(signature, dir_gen, False)
        if errors.pop(key, None) is not None:
            log.info("rate file fixed", extra={"key": key})
        if self._limits.get(key) != limit:
            updates[key] = limit
        return True

    def _note(
        self,
        errors: dict[str, FileError],
        name: str,
        kind: str,
        message: str,
        signature: object = None,
    ) -> None:
        """Record an error; the same error seen again on an unchanged file is not new."""
        fingerprint = (kind, message, signature)
        if name in errors and self._fingerprints.get(name) == fingerprint:
            return
        self._fingerprints[name] = fingerprint
        old = errors.get(name)
        if old is not None and old.kind == kind and old.message == message:
            errors[name] = replace(old, count=old.count + 1)
        else:
            errors[name] = FileError(name, kind, message, time.time(), 1)
        self.errors_seen += 1
        log.warning(
            "rate file problem",
            extra={"path": str(self.path / name), "kind": kind, "error": message},
        )

    def _apply(
        self, updates: Mapping[str, Limit | None], sources: Mapping[str, str]
    ) -> tuple[Change, ...]:
        limits = dict(self._limits)
        changes = []
        for key in sorted(updates):
            old, new = limits.get(key), updates[key]
            if old == new:
                continue
            if new is None:
                del limits[key]
            else:
                limits[key] = new
            change = Change(key, old, new, sources.get(key, "file"))
            changes.append(change)
            log.info(  # routine: an operator's change, not a problem
                "rate limit changed",
                extra={"key": key, "old": show(old), "new": show(new), "source": change.source},
            )
        if changes:
            self.changes += len(changes)
            self._limits = MappingProxyType(limits)
        return tuple(changes)


def rates_statistics(table: RateTable, rates_dir: RatesDir) -> RatesStatistics:
    """The rate table's totals with its directory's counters (``stats``, ``rates.list``)."""
    totals = table.statistics()
    return RatesStatistics(
        totals.throttled_total, totals.disabled_total, totals.keys, rates_dir.statistics()
    )
