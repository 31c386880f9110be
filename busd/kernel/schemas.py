"""The schema check of Admission: a loaded ``SchemaSet`` plus traffic counters.

The compiled set is immutable and shared with clients (``busd_protocol.schemas``); the counters
live in ``SchemaTraffic``, a separate object, so they survive every reload: the broker task
builds a new set elsewhere (file I/O, compilation) and calls ``SchemaGate.install`` between
messages.

Deprecated versions are accepted, and each use is recorded as (schema, version, publisher)
in a bounded table the I/O layer drains periodically to log; the kernel reads no clock, so
"rate-limited" means "at most one line per key per drain".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from busd_protocol.codes import Code, Reject
from busd_protocol.schemas import INVALID, Route, SchemaSet

DEFAULT_MAX_DEPRECATED_KEYS = 1024


@dataclass(frozen=True, slots=True)
class DeprecatedUse:
    """A publisher sent ``count`` messages of a deprecated version since the last drain."""

    schema: str
    version: int
    publisher: str
    count: int


@dataclass(frozen=True, slots=True)
class VersionStatistics:
    """A loaded version: its status and its traffic since start."""

    version: int
    status: str
    accepted: int
    rejected: Mapping[str, int]  # by code


@dataclass(frozen=True, slots=True)
class SchemaStatistics:
    """A loaded schema and each of its versions."""

    name: str
    description: str
    topics: tuple[str, ...]
    versions: tuple[VersionStatistics, ...]


@dataclass(frozen=True, slots=True)
class UnloadedStatistics:
    """A version no longer loaded, with its traffic from when it was."""

    name: str
    version: int
    accepted: int
    rejected: Mapping[str, int]  # by code


@dataclass(frozen=True, slots=True)
class SchemaGateStatistics:
    """``SchemaGate.statistics()``."""

    schemas: tuple[SchemaStatistics, ...]
    unloaded: tuple[UnloadedStatistics, ...]
    unknown: Mapping[str, int]  # unknown_schema / unknown_version counts, by code
    deprecated_pending: int  # deprecated uses recorded, not yet drained to the log
    deprecated_dropped: int  # deprecated uses not recorded: the table was full

    @classmethod
    def empty(cls) -> SchemaGateStatistics:
        return cls((), (), {}, 0, 0)


class SchemaTraffic:
    """Per-(schema, version) counters since start. Owned by the broker task, not thread-safe.

    Keys come only from loaded (schema, version) pairs, so a publisher inventing names or
    versions cannot grow these tables: unknown ones are counted per code.
    """

    __slots__ = (
        "accepted",
        "deprecated",
        "deprecated_dropped",
        "max_deprecated_keys",
        "rejected",
        "unknown",
    )

    def __init__(self, max_deprecated_keys: int = DEFAULT_MAX_DEPRECATED_KEYS) -> None:
        self.accepted: dict[tuple[str, int], int] = {}
        self.rejected: dict[tuple[str, int, str], int] = {}
        self.unknown: dict[str, int] = {}
        self.deprecated: dict[tuple[str, int, str], int] = {}
        # Deprecated uses not recorded because the table was full (new publishers only).
        self.deprecated_dropped = 0
        self.max_deprecated_keys = max_deprecated_keys

    def drain_deprecated(self) -> list[DeprecatedUse]:
        """Uses recorded since the previous drain, oldest key first; the table is emptied."""
        uses = [DeprecatedUse(s, v, p, n) for (s, v, p), n in self.deprecated.items()]
        self.deprecated = {}
        return uses


class SchemaGate:
    """``SchemaCheck`` for ``busd.kernel.admission.Admission``."""

    __slots__ = ("_deprecated", "_routes", "schemas", "traffic")

    def __init__(self, schemas: SchemaSet, traffic: SchemaTraffic | None = None) -> None:
        self.traffic = traffic if traffic is not None else SchemaTraffic()
        self.schemas = schemas
        self._routes: dict[tuple[str, int], Route] = schemas.routes()
        self._deprecated = self._deprecated_keys(schemas)

    def install(self, schemas: SchemaSet) -> None:
        """Swap in a newly loaded set; counters carry over. Call between messages."""
        self._routes = schemas.routes()
        self._deprecated = self._deprecated_keys(schemas)
        self.schemas = schemas

    @staticmethod
    def _deprecated_keys(schemas: SchemaSet) -> frozenset[tuple[str, int]]:
        return frozenset(
            (info.name, v.version)
            for info in schemas.describe()
            for v in info.versions
            if v.status == "deprecated"
        )

    def check(
        self, topic: str, schema: str, version: int, data: dict[str, Any], publisher: str = ""
    ) -> Reject | None:
        # The accept path in one frame: a route (known, not retired), the topic prefix and
        # the generated check. Anything else takes the full path below, which explains the
        # refusal. An exception here or there is a bug in a check: it is not caught, so the
        # caller (the broker) answers ``internal``, counts it and logs its traceback.
        key = (schema, version)
        route = self._routes.get(key)
        if route is not None and topic.startswith(route[0]) and route[1](data):
            accepted = self.traffic.accepted
            accepted[key] = accepted.get(key, 0) + 1
            if route[2]:
                self._record_deprecated(schema, version, publisher)
            return None
        return self._check_slowly(topic, schema, version, data, publisher)

    def _check_slowly(
        self, topic: str, schema: str, version: int, data: dict[str, Any], publisher: str
    ) -> Reject | None:
        traffic = self.traffic
        verdict = self.schemas.explain(topic, schema, version, data)
        key = (schema, version)
        if verdict is None:
            accepted = traffic.accepted
            accepted[key] = accepted.get(key, 0) + 1
            if key in self._deprecated:
                self._record_deprecated(schema, version, publisher)
            return None
        code, reason = verdict
        if code == INVALID or self.schemas.status(schema, version) is not None:
            counted = (schema, version, code)
            traffic.rejected[counted] = traffic.rejected.get(counted, 0) + 1
        else:
            traffic.unknown[code] = traffic.unknown.get(code, 0) + 1
        return Reject(Code(code), reason)

    def _record_deprecated(self, schema: str, version: int, publisher: str) -> None:
        table = self.traffic.deprecated
        use = (schema, version, publisher)
        count = table.get(use)
        if count is not None:
            table[use] = count + 1
        elif len(table) < self.traffic.max_deprecated_keys:
            table[use] = 1
        else:
            self.traffic.deprecated_dropped += 1

    def drain_deprecated(self) -> list[DeprecatedUse]:
        return self.traffic.drain_deprecated()

    def statistics(self) -> SchemaGateStatistics:
        """Each loaded schema and version with its status and counts, counts of versions no
        longer loaded, and unknown-name counts (for `busdctl schemas` and metrics)."""
        traffic = self.traffic
        rejected: dict[tuple[str, int], dict[str, int]] = {}
        for (schema, version, code), n in traffic.rejected.items():
            rejected.setdefault((schema, version), {})[code] = n
        listed: set[tuple[str, int]] = set()
        schemas = []
        for info in self.schemas.describe():
            versions = []
            for v in info.versions:
                key = (info.name, v.version)
                listed.add(key)
                versions.append(
                    VersionStatistics(
                        v.version, v.status, traffic.accepted.get(key, 0), rejected.get(key, {})
                    )
                )
            schemas.append(
                SchemaStatistics(info.name, info.description, tuple(info.topics), tuple(versions))
            )
        unloaded = tuple(
            UnloadedStatistics(s, v, traffic.accepted.get((s, v), 0), rejected.get((s, v), {}))
            for s, v in sorted(set(traffic.accepted) | set(rejected))
            if (s, v) not in listed
        )
        return SchemaGateStatistics(
            tuple(schemas),
            unloaded,
            dict(traffic.unknown),
            len(traffic.deprecated),
            traffic.deprecated_dropped,
        )
