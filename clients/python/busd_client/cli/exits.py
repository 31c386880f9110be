"""The one exit-status table of every busdctl command (shown by `busdctl --help`, documented in
docs/operations.md). Scripts and monitoring checks rely on these numbers: never reuse one for
another meaning."""

from __future__ import annotations

import textwrap

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "EXIT_WARNING",
    "TABLE",
    "epilog",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_WARNING = 4

TABLE: tuple[tuple[int, str, str], ...] = (
    (EXIT_OK, "ok", "done; every message accepted; busd ready"),
    (
        EXIT_FAILED,
        "failed",
        "busd refused the command or a message; some broker of a pool failed; status/ping: "
        "busd is not ready and needs a look (a critical assertion violated, sockets not bound)",
    ),
    (
        EXIT_USAGE,
        "usage",
        "bad arguments (including values busd refuses as bad_argument), or a pool or "
        "configuration file busdctl cannot use",
    ),
    (
        EXIT_UNREACHABLE,
        "unreachable",
        "busd does not answer in time: its control socket, metrics endpoint or message endpoint",
    ),
    (
        EXIT_WARNING,
        "warning",
        "busd answered and did it, but reports a problem: a rates file refused (rates), "
        "limits that differ between brokers (pool rates), starting, warming up, draining or "
        "a non-critical assertion violated (status/ping)",
    ),
)


def epilog() -> str:
    """The table as `--help` shows it."""
    lines = ["exit status (every command):"]
    for code, name, meaning in TABLE:
        lines += textwrap.wrap(
            meaning, 92, initial_indent=f"  {code}  {name:13}", subsequent_indent=" " * 18
        )
    return "\n".join(lines)
