"""busdctl status and busdctl ping: is this busd well? For an operator, and as a monitoring check.

Both find busd as cli/locate.py says (no flag on an installed host). ``ping`` asks /readyz
once (the control socket when busd serves no metrics) and prints one line. ``status`` also
reads /metrics and the control socket and prints what an operator checks first: version,
uptime, where it was found, traffic, rate file problems, assertions.

The verdict is check-style, with the exit statuses of every busdctl command (cli/exits.py):

- 0 ok: ready;
- 4 warning: answers, but starting, warming up, draining, a non-critical assertion violated,
  a rates file refused, or (status) the control socket does not answer;
- 1 critical: not ready for a reason that needs a human (a critical assertion violated,
  sockets not bound), or the metrics endpoint is down while the control socket answers;
- 3 unreachable: nothing answers.

A control socket refused for permissions (busdctl not run as root or busd's user) is noted,
not held against busd.
"""

from __future__ import annotations

import argparse
import datetime
import errno
from dataclasses import dataclass, field
from typing import Any

from busd_client.cli import locate
from busd_client.cli.common import add_control, add_json, add_metrics, dump_json, fail
from busd_client.cli.exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    EXIT_WARNING,
)
from busd_client.cli.exposition import fmt_bytes, readyz, reason
from busd_client.cli.stats import Summary, read_summary
from busd_client.control import ControlClient, ControlError, ControlUnavailable

__all__ = ["Verdict", "register"]

# /readyz reasons that pass by themselves (busd says "not ready: R1; R2").
TRANSIENT = ("starting", "warming up", "draining")
NAMES = {EXIT_OK: "OK", EXIT_WARNING: "WARNING", EXIT_FAILED: "CRITICAL"}
NAMES[EXIT_UNREACHABLE] = "UNREACHABLE"


@dataclass
class Verdict:
    """What was found, and the exit status it earns (the worst of its findings)."""

    status: int = EXIT_OK
    ready: bool | None = None
    reasons: list[str] = field(default_factory=list)  # busd's own, from /readyz
    problems: list[str] = field(default_factory=list)  # ours: why the status is not 0
    notes: list[str] = field(default_factory=list)  # said, but not held against busd

    def worse(self, status: int, problem: str) -> None:
        rank = [EXIT_OK, EXIT_WARNING, EXIT_FAILED, EXIT_UNREACHABLE]
        if rank.index(status) > rank.index(self.status):
            self.status = status
        self.problems.append(problem)

    def line(self) -> str:
        return NAMES[self.status] + (": " + "; ".join(self.problems) if self.problems else "")


def register(subparsers: Any) -> None:
    for name, run, text in (
        ("status", run_status, "busd's state, traffic and problems, with a check's exit status"),
        ("ping", run_ping, "one line: does busd answer, is it ready (a check's exit status)"),
    ):
        parser = subparsers.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}: 0 ready, 4 warning (starting, warming "
            "up, draining, a problem to look at), 1 critical (not ready: a critical assertion, "
            "sockets not bound), 3 unreachable.",
        )
        add_metrics(parser)
        add_control(parser)
        add_json(parser)
        parser.add_argument(
            "--timeout",
            type=float,
            default=5.0,
            metavar="S",
            help="seconds to wait for each answer (default %(default)s)",
        )
        parser.set_defaults(func=run)


def _readiness(verdict: Verdict, address: str, timeout: float) -> bool:
    """Ask /readyz; fold its answer into ``verdict``. False when nothing answered."""
    try:
        code, body = readyz(address, timeout)
    except OSError as exc:
        verdict.problems.append(f"metrics endpoint {address} does not answer: {reason(exc)}")
        return False
    verdict.ready = code == 200
    if code != 200:
        verdict.reasons = [r.strip() for r in body.removeprefix("not ready:").split(";")]
        transient = all(r.startswith(TRANSIENT) for r in verdict.reasons)
        verdict.worse(
            EXIT_WARNING if transient else EXIT_FAILED, "not ready: " + "; ".join(verdict.reasons)
        )
    return True


def _control(
    verdict: Verdict, path: locate.Found, timeout: float, cmd: str
) -> dict[str, Any] | None:
    """One control command; None (noted in ``verdict``) when the socket does not answer."""
    try:
        with ControlClient(path.value, timeout=timeout) as client:
            return client.call(cmd)
    except ControlUnavailable as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM):
            verdict.notes.append(
                f"control socket {path.value}: permission denied (run as root or busd's user)"
            )
        else:
            verdict.problems.append(f"control socket: {exc.message}")
    except ControlError as exc:
        verdict.problems.append(f"control socket: {cmd} refused: {exc.message} ({exc.code})")
    return None


def _where(args: argparse.Namespace) -> tuple[locate.Found, locate.Found] | int:
    try:
        return locate.metrics(args), locate.control(args)
    except locate.LocateError as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)


def run_ping(args: argparse.Namespace) -> int:
    where = _where(args)
    if isinstance(where, int):
        return where
    metrics, control = where
    verdict = Verdict()
    if metrics.value != "off":
        answered, asked = _readiness(verdict, metrics.value, args.timeout), metrics.value
    else:  # no /readyz: the control socket answering is all there is to know
        stats = _control(verdict, control, args.timeout, "stats")
        answered, asked = stats is not None, control.value
        if stats is not None and (stats.get("stats") or {}).get("draining"):
            verdict.worse(EXIT_WARNING, "not ready: draining")
    if not answered:
        verdict.status = EXIT_UNREACHABLE
    if args.json:
        print(dump_json({"status": NAMES[verdict.status].lower(), **_fields(verdict, asked)}))
    elif verdict.status == EXIT_OK:
        print(f"busd at {asked}: ready")
    else:
        print(f"busd at {asked}: {verdict.line()}")
    return verdict.status


def run_status(args: argparse.Namespace) -> int:
    where = _where(args)
    if isinstance(where, int):
        return where
    metrics, control = where
    verdict = Verdict()
    summary: Summary | None = None
    answered = False
    if metrics.value != "off":
        answered = _readiness(verdict, metrics.value, args.timeout)
        if answered:
            try:
                summary = read_summary(metrics, args.timeout)
            except OSError as exc:
                verdict.problems.append(str(exc))
    rates = _control(verdict, control, args.timeout, "rates.list")
    if rates is not None:
        errors = rates.get("errors") or []
        if errors:
            files = ", ".join(e.get("file") or "(directory)" for e in errors)
            verdict.worse(EXIT_WARNING, f"rates file(s) refused: {files} (busdctl rates)")
    if not answered and rates is None:
        verdict.status = EXIT_UNREACHABLE
    elif not answered and metrics.value != "off":
        verdict.worse(EXIT_FAILED, "the metrics endpoint is down while the control socket answers")
    elif rates is None and not verdict.notes and answered:
        verdict.worse(EXIT_WARNING, "the control socket does not answer")
    if summary is not None:
        violated = sorted(n for n, ok in summary.assertions.items() if not ok)
        critical = [n for n in violated if any(f"assertion {n} " in r for r in verdict.reasons)]
        if len(critical) < len(violated):
            others = [n for n in violated if n not in critical]
            verdict.worse(EXIT_WARNING, f"assertion(s) violated: {', '.join(others)}")
    if args.json:
        print(
            dump_json(
                {
                    "status": NAMES[verdict.status].lower(),
                    **_fields(verdict, metrics.value),
                    "metrics": {"address": metrics.value, "source": metrics.source},
                    "control": {"path": control.value, "source": control.source},
                    "stats": None if summary is None else summary.as_dict(),
                    "rates": rates,
                }
            )
        )
    else:
        print("\n".join(_text(verdict, metrics, control, summary, rates)))
    return verdict.status


def _fields(verdict: Verdict, address: str) -> dict[str, Any]:
    return {
        "exit": verdict.status,
        "address": address,
        "ready": verdict.ready,
        "reasons": verdict.reasons,
        "problems": verdict.problems,
        "notes": verdict.notes,
    }


def _text(
    verdict: Verdict,
    metrics: locate.Found,
    control: locate.Found,
    summary: Summary | None,
    rates: dict[str, Any] | None,
) -> list[str]:
    if summary is not None:
        up = int(max(0.0, datetime.datetime.now().timestamp() - summary.started))
        uptime = f", up {up // 3600}:{up // 60 % 60:02d}:{up % 60:02d}" if summary.started else ""
        state = "ready" if verdict.ready else "not ready: " + "; ".join(verdict.reasons)
        lines = [f"busd {summary.version}: {state}{uptime}"]
    else:
        lines = ["busd: " + ("not read" if verdict.status == EXIT_UNREACHABLE else "running")]
    lines.append(f"  metrics     {metrics.where()}")
    lines.append(f"  control     {control.where()}")
    if summary is not None:
        rejected = int(sum(summary.rejected.values()))
        lines.append(
            f"  traffic     received {summary.received:.0f}, accepted {summary.accepted:.0f}, "
            f"rejected {rejected}; {summary.publishers:.0f} publisher(s), "
            f"{summary.subscribers:.0f} subscriber(s)"
        )
        if summary.state is not None:
            st = summary.state
            lines.append(
                f"  state       {st.entries:.0f} key(s), {fmt_bytes(st.bytes)} held, "
                f"{sum(st.evicted.values()):.0f} evicted; {st.requests.get('ok', 0.0):.0f} "
                f"snapshot(s) served, {st.failed:.0f} failed, {st.active:.0f} active"
            )
        held = sum(summary.assertions.values())
        if summary.assertions:
            lines.append(f"  assertions  {held} of {len(summary.assertions)} hold")
    if rates is not None:
        limits, errors = rates.get("limits") or [], rates.get("errors") or []
        lines.append(
            f"  rates       {len(limits)} limit(s) in {rates.get('dir', '?')}"
            + (f"; {len(errors)} rates file problem(s)" if errors else "")
        )
    lines += [f"  note        {note}" for note in verdict.notes]
    lines.append(f"status: {verdict.line()}")
    return lines
