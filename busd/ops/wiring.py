"""Attach the operations subsystems to an ``App``: metrics and health over HTTP, service-level
assertions, and systemd notification. ``App.startup`` calls ``attach(self)`` once, after the
broker's sockets are bound; everything here only registers hooks, tasks and statistics.

Failures that make busd misconfigured (the metrics port taken, a broken assertions file)
raise here, so start-up fails and busd exits non-zero instead of looking alive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from busd.ops.assertions import AssertionMonitor
from busd.ops.health import Health
from busd.ops.http import MetricsServer
from busd.ops.metrics import make_registry
from busd.ops.systemd import Notifier

if TYPE_CHECKING:
    from busd.app import App


def attach(app: App) -> None:
    health = Health()

    def serving() -> Iterable[str]:
        if app.draining:
            yield "draining"
        elif not app.broker.bound:
            yield "sockets not bound"
        elif left := app.broker.warming_up():
            yield f"warming up ({left:.1f} s left)"

    health.add_check(serving)

    rates = getattr(app, "rates", None)  # busd.control.RateControl, when running
    if rates is not None:

        def rate_keys() -> list[dict[str, Any]]:
            return [dataclasses.asdict(row) for row in rates.table.snapshot(rates.clock())]

        app.stats_sources["rate_keys"] = rate_keys  # throttles by key, for metrics and top

    if app.config.assertions:
        monitor = AssertionMonitor(app.config.assertions, app.statistics)
        monitor.load()
        health.add_check(monitor.critical_violations)
        app.stats_sources["assertions"] = monitor.statistics
        app.supervisor.add("assertions", monitor.run)
        app.reload_hooks.append(monitor.reload)

    address = app.config.metrics_address
    if address is not None:
        registry = make_registry(app.statistics, health.ready)
        server = MetricsServer(address[0], address[1], registry, health)
        server.bind()
        app.stats_sources["http"] = server.statistics
        app.supervisor.add("metrics", server.run)

    notifier = Notifier()

    def on_ready() -> None:
        health.started = True
        notifier.ready()

    app.ready_hooks.append(on_ready)
    app.drain_hooks.append(notifier.stopping)
    if notifier.enabled:
        app.stats_sources["systemd"] = notifier.statistics
        app.supervisor.add("watchdog", notifier.run_watchdog)
