"""The schemas directory at run time: load at start, reload on SIGHUP or `schemas.reload`,
log who still publishes deprecated versions, answer `schemas.list`.

Wiring (``App.startup``, next to the rates)::

    schemas = SchemaControl(config.schemas_dir, app.admission)
    schemas.load()                       # SchemaLoadError: start-up fails, busd exits non-zero
    app.reload_hooks.append(schemas.request_reload)        # SIGHUP
    app.supervisor.add("schemas", schemas.run)             # deprecated-use log, every minute
    app.stats_sources.schemas = schemas.statistics         # SchemaGate.statistics() + reloads
    ControlServer(path, {**rates.handlers(), **schemas.handlers(), ...})

A reload reads, checks (busd.schemacheck.load_checked: metadata, compatibility) and compiles
the whole directory in a worker thread, then installs the new immutable set on the event
loop, between two messages. Any problem refuses the whole new set; the previous one keeps
serving. Counters live in one ``SchemaTraffic`` for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from busd.control.server import ControlError, Handler
from busd.kernel.admission import Admission
from busd.kernel.schemas import SchemaGate, SchemaGateStatistics, SchemaTraffic
from busd.logs import get
from busd.schemacheck import load_checked
from busd.statistics import SchemasStatistics
from busd_protocol.schemas import SchemaLoadError, SchemaSet

log = get("schemas")
MAX_PUBLISHERS_SHOWN = 1024


class SchemaControl:
    """The loaded set's gate in ``Admission``, its reloads, and the ``schemas.*`` commands."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        admission: Admission,
        *,
        log_interval: float = 60.0,
        loader: Callable[[str], SchemaSet] = load_checked,
    ) -> None:
        self.directory = os.fspath(directory)
        self.admission = admission
        self.log_interval = log_interval
        self.loader = loader
        self.traffic = SchemaTraffic()
        self.gate: SchemaGate | None = None
        self.reloads = 0
        self.reload_failures = 0
        self.last_error = ""
        self.loaded_at = 0.0  # wall-clock seconds of the last successful load
        # (schema, version, publisher) -> [messages since start, wall time last drained]
        self.deprecated_seen: dict[tuple[str, int, str], list[float]] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def load(self) -> None:
        """Load at start-up, blocking; raises ``SchemaLoadError`` naming file and reason."""
        self._install(self.loader(self.directory))
        log.info("schemas loaded", extra={"dir": self.directory, **self._summary()})

    def _install(self, schemas: SchemaSet) -> None:
        self.admission.install_state(schemas.state_rules())
        if self.gate is None:
            self.gate = SchemaGate(schemas, self.traffic)
            self.admission.install_schemas(self.gate)
        else:
            self.gate.install(schemas)
        self.loaded_at = time.time()

    def _summary(self) -> dict[str, int]:
        infos = self.gate.schemas.describe() if self.gate is not None else ()
        return {"schemas": len(infos), "versions": sum(len(i.versions) for i in infos)}

    async def reload(self) -> dict[str, Any]:
        """Load the directory again; install it if it is clean. Raises ``SchemaLoadError``
        (the previous set stays installed). Reloads run one at a time, in request order."""
        async with self._lock:
            try:
                schemas = await asyncio.to_thread(self.loader, self.directory)
            except SchemaLoadError as exc:
                self.reload_failures += 1
                self.last_error = str(exc)
                log.error(
                    "schemas reload refused; the previous set keeps serving",
                    extra={
                        "dir": self.directory,
                        "file": exc.file,
                        "error": exc.reason,
                        "violations": getattr(exc, "violations", []),
                    },
                )
                raise
            except Exception as exc:
                self.reload_failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("schemas reload failed; the previous set keeps serving")
                raise SchemaLoadError(self.directory, self.last_error) from exc
            self._install(schemas)
            self.reloads += 1
            self.last_error = ""
            summary = self._summary()
            log.info("schemas reloaded", extra={"dir": self.directory, **summary})
            return {"loaded": summary["schemas"], "versions": summary["versions"], "errors": []}

    def request_reload(self) -> None:
        """SIGHUP hook (runs on the loop, must not block): reload in a task.

        Error handling: a refused or failed reload is logged and counted by ``reload`` and
        the previous set keeps serving; nothing is retried until the next SIGHUP.
        """
        task = asyncio.get_running_loop().create_task(self._reload_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(SchemaLoadError):  # logged by reload
            await self.reload()

    async def run(self) -> None:
        """Log deprecated-version use every ``log_interval`` seconds (a supervised task).

        Error handling: nothing is retried here; an error (a bug) ends the task for the
        supervisor to restart; the uses recorded meanwhile are logged by the next run.
        """
        while True:
            await asyncio.sleep(self.log_interval)
            self.log_deprecated()

    def log_deprecated(self) -> None:
        """Drain the gate's record: one warning per (schema, version, publisher)."""
        if self.gate is None:
            return
        now = time.time()
        for use in self.gate.drain_deprecated():
            log.warning(
                "deprecated schema version in use",
                extra={
                    "schema": use.schema,
                    "version": use.version,
                    "publisher": use.publisher,
                    "messages": use.count,
                },
            )
            key = (use.schema, use.version, use.publisher)
            seen = self.deprecated_seen.get(key)
            if seen is not None:
                seen[0] += use.count
                seen[1] = now
            elif len(self.deprecated_seen) < MAX_PUBLISHERS_SHOWN:
                self.deprecated_seen[key] = [use.count, now]
        dropped = self.traffic.deprecated_dropped
        if dropped:
            log.warning(
                "deprecated uses not attributed: too many publishers", extra={"messages": dropped}
            )

    def statistics(self) -> SchemasStatistics:
        gate = self.gate.statistics() if self.gate is not None else SchemaGateStatistics.empty()
        return SchemasStatistics(gate, self.reloads, self.reload_failures)

    def listing(self) -> dict[str, Any]:
        """`busdctl schemas`: one row per version (loaded, then no longer loaded) with status
        and traffic since start, publishers of deprecated versions, reload state."""
        self.log_deprecated()
        gate = self.statistics().gate
        rows = [
            _row(
                schema.name,
                v.version,
                v.status,
                list(schema.topics),
                accepted=v.accepted,
                rejected=v.rejected,
            )
            for schema in gate.schemas
            for v in schema.versions
        ]
        rows += [
            _row(v.name, v.version, "unloaded", [], accepted=v.accepted, rejected=v.rejected)
            for v in gate.unloaded
        ]
        publishers = [
            {
                "schema": s,
                "version": v,
                "publisher": p,
                "messages": int(seen[0]),
                "last_seen": seen[1],
            }
            for (s, v, p), seen in sorted(self.deprecated_seen.items())
        ]
        return {
            "dir": self.directory,
            "versions": rows,
            "deprecated_publishers": publishers,
            "unknown": dict(gate.unknown),
            "loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "last_error": self.last_error,
        }

    def handlers(self) -> dict[str, Handler]:
        async def schemas_list(args: dict[str, Any]) -> dict[str, Any]:
            return self.listing()

        async def schemas_reload(args: dict[str, Any]) -> dict[str, Any]:
            try:
                return await self.reload()
            except SchemaLoadError as exc:
                raise ControlError("schemas_refused", str(exc)) from exc

        return {"schemas.list": schemas_list, "schemas.reload": schemas_reload}


def _row(
    name: str,
    version: int,
    status: str,
    topics: list[str],
    *,
    accepted: int,
    rejected: Mapping[str, int],
) -> dict[str, Any]:
    """One version's row; numbers stay numbers and lists lists (busdctl formats the text)."""
    return {
        "schema": name,
        "version": version,
        "status": status,
        "topics": topics,
        "accepted": accepted,
        "rejected": sum(rejected.values()),
        "rejected_by_code": dict(sorted(rejected.items())),
    }
