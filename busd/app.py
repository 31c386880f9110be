"""The daemon: startup -> main loop -> shutdown, composing the layers.

Startup checks the configuration (``busd.preflight``, what ``--check-config`` checks), then
loads the policies and binds every socket; a failure exits 78 (configuration), 69 (cannot
bind) or 70 (a bug): a misconfigured busd must not look alive. The main loop runs the broker
task and the supervised peripheral tasks; systemd hears ``READY=1`` when the warm-up ends.
The first SIGTERM/SIGINT drains: answer every message read, close with a linger deadline,
exit 0. A second SIGINT forces an immediate exit. Whatever is opened is closed on every path
out. Nothing is kept in memory that a restart would need: operator state lives in files, so
kill -9 is a normal stop and start-up is the recovery path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from busd.control.trust import TrustControl, server_keys
from busd.kernel.admission import Admission
from busd.kernel.buckets import BucketRow
from busd.logs import catch_loop_errors, get
from busd.ops.assertions import AssertionMonitor
from busd.ops.health import Health
from busd.ops.http import MetricsServer
from busd.ops.metrics import make_registry
from busd.ops.systemd import Notifier
from busd.preflight import EXIT_FORCED, EXIT_OK, EXIT_SOFTWARE, check, exit_status
from busd.statistics import Sources, Statistics, as_json
from busd.supervision.supervisor import GaveUp, Supervisor
from busd.transport import monitor
from busd.transport.broker import Broker
from busd.transport.zap import ZapHandler

_log = get("app")
_STATUS_EVERY = 1.0  # seconds between STATUS= lines during the warm-up


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
        # The optional statistics sections, set as their subsystems start.
        self.stats_sources = Sources()
        self.schemas: SchemaControl | None = None
        self.rates: RateControl | None = None
        self.control: ControlServer | None = None
        self.notifier = Notifier()
        # What serve() opened, closed in reverse on every way out of it.
        self._closing = contextlib.AsyncExitStack()
        self._stopping_sent = False
        self.trust: TrustControl | None = None
        self.zap: ZapHandler | None = None
        self._interrupts = 0

    # -- startup ------------------------------------------------------------------------
    async def startup(self) -> None:
        """Everything that can fail on bad configuration fails here, before READY: first
        what ``busd --check-config`` checks (``BadConfig``), then loading and binding. Each
        resource opened registers its close in ``_closing`` as soon as it exists."""
        cfg = self.config
        closing = self._closing
        check(cfg)
        Path(cfg.var_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
        # Policies first, so the first message is judged under the operator's limits.
        self.schemas = SchemaControl(cfg.schemas_dir, self.admission)
        self.schemas.load()
        self.reload_hooks.append(self.schemas.request_reload)
        self.supervisor.add("schemas", self.schemas.run)
        self.stats_sources.schemas = self.schemas.statistics
        self.rates = RateControl(cfg.rates_path, self.admission, clock=self.broker.clock)
        closing.callback(self.rates.close)
        await self.rates.start()
        if cfg.schema_checks == "off":
            self.admission.install_schemas(None)
            _log.warning("schema checks are off: payloads are not checked")
        if cfg.rate_checks == "off":
            self.admission.install_rates(None)
            _log.warning("rate checks are off: rate limits are not enforced")
        self.supervisor.add("rates", self.rates.run)
        self.stats_sources.rates = self.rates.statistics

        self._start_trust()
        # The monitors attach between creating the sockets and binding them: a connection
        # accepted before its monitor exists is never reported, and the connection gauges
        # would miss it. A restarted watcher attaches a new monitor (libzmq replaces the old).
        first: dict[str, zmq.Socket[bytes]] = {}

        def attach_monitors() -> None:
            for role in ("ingress", "egress"):
                first[role] = self.broker.monitor_socket(role, monitor.EVENTS)

        def close_unused() -> None:  # monitor sockets no watcher took (start-up failed)
            for sock in first.values():
                sock.close(linger=0)

        closing.callback(close_unused)
        self.broker.bind(before=attach_monitors)

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
            {
                **self.rates.handlers(),
                **self.schemas.handlers(),
                **(self.trust.handlers() if self.trust is not None else {}),
                "stats": self._stats_command,
            },
        )
        closing.push_async_callback(self.control.close)
        await self.control.start()
        self.supervisor.add("control", self.control.run)
        self.stats_sources.control = self.control.statistics
        self._attach_ops()

    def _start_trust(self) -> None:
        """Keys and permissions, and the ZAP handler, before any socket is bound: from the
        first connection on, libzmq asks the handler (and refuses legacy ZMTP peers)."""
        cfg = self.config
        if cfg.authenticated:
            self.broker.curve = server_keys(cfg.curve_secret)
            self.trust = TrustControl(str(cfg.keys_path), cfg.acl, self.admission)
            self.trust.load()
            self.broker.on_denied = self.trust.denied
            self.reload_hooks.append(self.trust.request_reload)
            self.stats_sources.trust = self.trust.statistics
        self.zap = ZapHandler(self.ctx, self.trust.key_ring if self.trust else None)
        self.zap.start()
        self._closing.callback(self.zap.stop)
        self.supervisor.add("zap", self.zap.run)
        self.stats_sources.zap = self.zap.statistics

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

            def rate_keys() -> tuple[BucketRow, ...]:
                return rates.table.snapshot(rates.clock())

            self.stats_sources.rate_keys = rate_keys  # throttles by key, for metrics and top

        if self.config.assertions:
            monitor = AssertionMonitor(self.config.assertions, self.statistics)
            monitor.load()
            health.add_check(monitor.critical_violations)
            self.stats_sources.assertions = monitor.statistics
            self.supervisor.add("assertions", monitor.run)
            self.reload_hooks.append(monitor.reload)

        address = self.config.metrics_address
        if address is not None:
            registry = make_registry(self.statistics, health.ready)
            server = MetricsServer(address[0], address[1], registry, health)
            self._closing.callback(server.close)
            server.bind()
            self.stats_sources.http = server.statistics
            self.supervisor.add("metrics", server.run)

        notifier = self.notifier
        self._closing.callback(notifier.close)

        def on_ready() -> None:
            health.started = True

        self.ready_hooks.append(on_ready)
        self.drain_hooks.append(notifier.stopping)
        self.supervisor.add("warmup", self._warm_up)
        if notifier.enabled:
            self.stats_sources.systemd = notifier.statistics
            self.supervisor.add("watchdog", notifier.run_watchdog)

    async def _stats_command(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"stats": as_json(self.statistics())}

    def statistics(self) -> Statistics:
        """A snapshot of every counter, for the control socket, the metrics exporter and the
        assertions."""
        return self.stats_sources.read(
            broker=self.broker.stats.statistics(),
            ingress=self.ingress.statistics(),
            egress=self.egress.statistics(),
            restarts=self._restarts(),
            draining=self.draining,
        )

    def _restarts(self) -> dict[str, int]:
        """Restarts by supervised task: the one place that reads the supervisor's statistics
        (``busd.statistics`` sits below the supervision layer, so it holds only these)."""
        return {task.name: task.restarts for task in self.supervisor.statistics().tasks}

    # -- main loop ----------------------------------------------------------------------
    async def serve(self) -> int:
        """Start, serve until drained, stop; returns the exit status (``busd.preflight``).

        Error handling: a failed start-up is logged (``startup failed``, with the exit
        status; with the traceback when it is a bug) and returns 78, 69 or 70. Whatever was
        opened (sockets, files, the zmq context, signal handlers) is closed on every path
        out, last opened first; the broker's sockets with the ``linger`` deadline.
        """
        loop = asyncio.get_running_loop()
        async with self._closing as closing:
            closing.callback(self.ctx.destroy, linger=0)  # last: waits for lingering sockets
            closing.callback(self.broker.close, linger=self.config.linger)
            closing.enter_context(catch_loop_errors(loop))
            try:
                await self.startup()
            except Exception as exc:
                status = exit_status(exc)
                _log.error(
                    "startup failed",
                    exc_info=exc if status == EXIT_SOFTWARE else None,
                    extra={
                        "error": str(exc),
                        "error_type": type(exc).__name__,
                        "exit_status": status,
                    },
                )
            else:
                status = await self._serving(loop)
        return status

    async def _serving(self, loop: asyncio.AbstractEventLoop) -> int:
        closing = self._closing
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
            closing.callback(loop.remove_signal_handler, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        closing.callback(loop.remove_signal_handler, signal.SIGHUP)
        _log.info(
            "ready",
            extra={
                "version": __version__,
                "pid": os.getpid(),
                "pub_endpoint": self.broker.pub_endpoint,
                "sub_endpoint": self.broker.sub_endpoint,
                "state_endpoint": self.broker.state_endpoint,
                "config": describe(self.config),
            },
        )
        for hook in self.ready_hooks:
            hook()
        closing.callback(functools.partial(_log.info, "stopped"))  # after everything closed
        return await self._main_loop()

    async def _main_loop(self) -> int:
        """Run the broker and the supervised tasks until the broker has drained.

        Error handling: the broker is never restarted. When it crashes (a socket error, or
        a bug outside the judging of one message) its traceback is logged, ``STOPPING=1``
        is sent and the supervised tasks are cancelled: exit 70 at once, without a drain,
        its sockets being suspect. When the supervisor gives up (a task past its restart
        budget), busd drains as on SIGTERM and exits 70.
        """
        broker = asyncio.create_task(self.broker.run(), name="broker")
        supervised = asyncio.create_task(self.supervisor.run(), name="supervisor")
        await asyncio.wait({broker, supervised}, return_when=asyncio.FIRST_COMPLETED)
        status = EXIT_OK
        if supervised.done() and supervised.exception() is not None:
            _log.error("supervisor gave up; draining", extra={"error": str(supervised.exception())})
            status = EXIT_SOFTWARE
            self.begin_drain()
        try:
            await broker
        except Exception:
            _log.exception("broker crashed")
            self._send_stopping()
            status = EXIT_SOFTWARE
        supervised.cancel()
        with contextlib.suppress(asyncio.CancelledError, GaveUp):
            await supervised
        return status

    async def _warm_up(self) -> None:
        """Tell systemd how long the warm-up has left, once a second, then ``READY=1``:
        ``systemctl start`` returns only when busd accepts publishes (a supervised task that
        ends there; without ``NOTIFY_SOCKET`` it only logs ``serving``).

        Error handling: nothing to retry: a notification that fails is counted by the
        ``Notifier``, never raised. A restart (after a bug) resumes the countdown.
        """
        while (left := self.broker.warming_up()) > 0 and not self.draining:
            self.notifier.send(f"STATUS=warming up, {left:.1f} s left")
            await asyncio.sleep(min(_STATUS_EVERY, left))
        if not self.draining:
            _log.info("serving")
            self.notifier.ready()

    @property
    def draining(self) -> bool:
        return self.broker.draining

    def begin_drain(self) -> None:
        if not self.draining:
            _log.info("draining", extra={"deadline_s": self.config.drain_timeout})
            self.broker.drain()
            self._send_stopping()

    def _send_stopping(self) -> None:
        """The drain hooks (``STOPPING=1``), once: on a drain, or when the broker crashed."""
        if not self._stopping_sent:
            self._stopping_sent = True
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
