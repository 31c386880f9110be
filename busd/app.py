"""The daemon: startup -> main loop -> shutdown, composing the layers.

Startup binds every socket (failure here exits non-zero: a misconfigured busd must not look
alive). The main loop runs the broker task and the supervised peripheral tasks. The first
SIGTERM/SIGINT drains: stop taking publisher connections, answer every message read, close
with a linger deadline, exit 0. A second signal forces an immediate exit. Nothing is kept
in memory that a restart would need: operator state lives in files, so kill -9 is a normal
stop and start-up is the recovery path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import zmq

from busd import __version__
from busd.config import Config, describe
from busd.control import ControlServer, RateControl
from busd.control.schemas_dir import SchemaControl
from busd.kernel.admission import Admission
from busd.logs import get
from busd.ops import build
from busd.ops.assertions import AssertionMonitor
from busd.ops.health import Health
from busd.ops.http import MetricsServer
from busd.ops.jsonable import jsonable
from busd.ops.metrics import make_registry
from busd.ops.systemd import Notifier
from busd.supervision.supervisor import GaveUp, Supervisor
from busd.transport import monitor
from busd.transport.broker import Broker

_log = get("app")

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_USAGE = 2
EXIT_SOFTWARE = 70  # a task failed past its restart budget, or the broker crashed
EXIT_UNAVAILABLE = 69  # could not bind an endpoint at startup


class App:
    def __init__(self, config: Config):
        self.config = config
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.admission = Admission(max_bytes=config.max_message_bytes)
        self.broker = Broker(self.ctx, config, self.admission)
        self.ingress = monitor.ConnectionStats()
        self.egress = monitor.ConnectionStats()
        self.supervisor = Supervisor(budget=config.restart_budget, window=config.restart_window)
        # Subsystems attach here (see ``startup``): called on the loop, must not block.
        self.reload_hooks: list[Callable[[], Any]] = []
        self.ready_hooks: list[Callable[[], Any]] = []
        self.drain_hooks: list[Callable[[], Any]] = []
        # Extra statistics sections: name -> snapshot function.
        self.stats_sources: dict[str, Callable[[], Any]] = {}
        self.schemas: SchemaControl | None = None
        self.rates: RateControl | None = None
        self.control: ControlServer | None = None
        self._interrupts = 0

    # -- startup ------------------------------------------------------------------------
    async def startup(self) -> None:
        """Everything that can fail on bad configuration fails here, before READY."""
        cfg = self.config
        build.check()  # the dependency floor: an old libzmq is refused, not run on
        Path(cfg.var_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
        # Policies first, so the first message is judged under the operator's limits.
        self.schemas = SchemaControl(cfg.schemas_dir, self.admission)
        self.schemas.load()
        self.reload_hooks.append(self.schemas.request_reload)
        self.supervisor.add("schemas", self.schemas.run)
        self.stats_sources["schemas"] = self.schemas.statistics
        self.rates = RateControl(cfg.rates_path, self.admission, clock=self.broker.clock)
        await self.rates.start()
        if cfg.schema_checks == "off":
            self.admission.install_schemas(None)
            _log.warning("schema checks are off: payloads are not checked")
        if cfg.rate_checks == "off":
            self.admission.install_rates(None)
            _log.warning("rate checks are off: rate limits are not enforced")
        self.supervisor.add("rates", self.rates.run)
        self.stats_sources["rates"] = self.rates.statistics

        self.broker.bind()
        # The monitors attach now, before anyone can connect: a connection accepted before
        # its monitor exists is never reported, and the connection gauges would miss it.
        # A restarted watcher attaches a new monitor (libzmq replaces the old one).
        first = {
            role: self.broker.monitor_socket(role, monitor.EVENTS) for role in ("ingress", "egress")
        }

        def watcher(role: str, stats: monitor.ConnectionStats) -> Callable[[], Awaitable[None]]:
            # A subscriber connection's end releases what busd kept for its subscriptions.
            on_fd = self.broker.subscriptions.forget if role == "egress" else None

            def start() -> Awaitable[None]:
                sock = first.pop(role, None) or self.broker.monitor_socket(role, monitor.EVENTS)
                return monitor.watch(sock, stats, role, on_fd)

            return start

        self.supervisor.add("monitor.ingress", watcher("ingress", self.ingress))
        self.supervisor.add("monitor.egress", watcher("egress", self.egress))

        self.control = ControlServer(
            cfg.control_path,
            {**self.rates.handlers(), **self.schemas.handlers(), "stats": self._stats_command},
        )
        await self.control.start()
        self.supervisor.add("control", self.control.run)
        self.stats_sources["control"] = self.control.statistics
        self._attach_ops()

    def _attach_ops(self) -> None:
        """Metrics and health over HTTP, service-level assertions and systemd notification.

        Called once, after the broker's sockets are bound; it only registers hooks, tasks and
        statistics. What makes busd misconfigured (the metrics port taken, a broken
        assertions file) raises here, so start-up fails instead of busd looking alive.
        """
        health = Health()

        def serving() -> Iterable[str]:
            if self.draining:
                yield "draining"
            elif not self.broker.bound:
                yield "sockets not bound"
            elif left := self.broker.warming_up():
                yield f"warming up ({left:.1f} s left)"

        health.add_check(serving)

        rates = self.rates
        if rates is not None:

            def rate_keys() -> list[dict[str, Any]]:
                return [dataclasses.asdict(row) for row in rates.table.snapshot(rates.clock())]

            self.stats_sources["rate_keys"] = rate_keys  # throttles by key, for metrics and top

        if self.config.assertions:
            monitor = AssertionMonitor(self.config.assertions, self.statistics)
            monitor.load()
            health.add_check(monitor.critical_violations)
            self.stats_sources["assertions"] = monitor.statistics
            self.supervisor.add("assertions", monitor.run)
            self.reload_hooks.append(monitor.reload)

        address = self.config.metrics_address
        if address is not None:
            registry = make_registry(self.statistics, health.ready)
            server = MetricsServer(address[0], address[1], registry, health)
            server.bind()
            self.stats_sources["http"] = server.statistics
            self.supervisor.add("metrics", server.run)

        notifier = Notifier()

        def on_ready() -> None:
            health.started = True
            notifier.ready()

        self.ready_hooks.append(on_ready)
        self.drain_hooks.append(notifier.stopping)
        if notifier.enabled:
            self.stats_sources["systemd"] = notifier.statistics
            self.supervisor.add("watchdog", notifier.run_watchdog)

    async def _stats_command(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"stats": jsonable(self.statistics())}

    def statistics(self) -> dict[str, Any]:
        """A snapshot of every counter, for the control socket and the metrics exporter."""
        stats: dict[str, Any] = {
            "broker": self.broker.stats.snapshot(),
            "ingress": self.ingress.snapshot(),
            "egress": self.egress.snapshot(),
            "restarts": dict(self.supervisor.restarts_total),
            "draining": self.draining,
        }
        for name, source in self.stats_sources.items():
            stats[name] = source()
        return stats

    # -- main loop ----------------------------------------------------------------------
    async def serve(self) -> int:
        try:
            await self.startup()
        except Exception as exc:
            _log.error(
                "startup failed", extra={"error": str(exc), "error_type": type(exc).__name__}
            )
            await self._close_peripherals()
            self.ctx.destroy(linger=0)
            return EXIT_UNAVAILABLE
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        _log.info(
            "ready",
            extra={
                "version": __version__,
                "pid": os.getpid(),
                "pub_endpoint": self.broker.pub_endpoint,
                "sub_endpoint": self.broker.sub_endpoint,
                "config": describe(self.config),
            },
        )
        for hook in self.ready_hooks:
            hook()
        try:
            return await self._main_loop()
        finally:
            await self._close_peripherals()
            self._shutdown()

    async def _main_loop(self) -> int:
        broker = asyncio.create_task(self.broker.run(), name="broker")
        supervised = asyncio.create_task(self.supervisor.run(), name="supervisor")
        await asyncio.wait({broker, supervised}, return_when=asyncio.FIRST_COMPLETED)
        status = EXIT_OK
        if supervised.done():
            exc = supervised.exception()
            gave_up = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
            _log.error("supervisor gave up; draining", extra={"error": str(gave_up)})
            status = EXIT_SOFTWARE
            self.begin_drain()
        try:
            await broker
        except Exception:
            _log.exception("broker crashed")
            status = EXIT_SOFTWARE
        supervised.cancel()
        with contextlib.suppress(asyncio.CancelledError, GaveUp, ExceptionGroup):
            await supervised
        return status

    @property
    def draining(self) -> bool:
        return self.broker.draining

    def begin_drain(self) -> None:
        if not self.draining:
            _log.info("draining", extra={"deadline_s": self.config.drain_timeout})
            self.broker.drain()
            for hook in self.drain_hooks:
                hook()

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        # A second SIGINT (an operator's second Ctrl-C) forces. A repeated SIGTERM does not:
        # `timeout` and some service managers deliver it to the process and its group.
        if sig == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                _log.warning("second SIGINT: forced exit")
                os._exit(EXIT_FORCED)
        self.begin_drain()

    def _on_reload_signal(self) -> None:
        _log.info("SIGHUP: reloading")
        for hook in self.reload_hooks:
            hook()

    # -- shutdown -----------------------------------------------------------------------
    async def _close_peripherals(self) -> None:
        if self.control is not None:
            await self.control.close()
        if self.rates is not None:
            self.rates.close()

    def _shutdown(self) -> None:
        self.broker.close(linger=self.config.linger)
        self.ctx.destroy(linger=0)  # waits for the lingering sockets above
        _log.info("stopped")
