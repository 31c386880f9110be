"""What busd was built and runs with, and the oldest dependencies it agrees to start on.

busd's bounds on hostile peers rest on behaviour measured on these versions (docs/operations.md
§10): libzmq before 4.3.3 has known remote memory-corruption bugs (CVE-2019-13132, fixed in
4.3.2; CVE-2020-15166, fixed in 4.3.3), and 4.3.5 is the release the per-connection
subscription handling was measured on. A busd on an older library refuses to start
(``busd.preflight``: exit 78, and ``busd --check-config`` says so), naming what it found,
instead of running without a word.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

import msgpack
import zmq

from busd import PROTOCOL_VERSION, __version__

# name -> (oldest version accepted, why)
FLOORS: Mapping[str, tuple[tuple[int, ...], str]] = {
    "libzmq": ((4, 3, 5), "CVE-2019-13132 and CVE-2020-15166; the XPUB_MANUAL behaviour busd uses"),
    "pyzmq": ((25, 0), "zmq_msg_get(ZMQ_SRCFD) on frames"),
    "msgpack": ((1, 0), "max_ext_len and object_pairs_hook in the strict envelope decoder"),
}


# The labels of busd_build_info, in order: the keys of ``versions()``.
BUILD_LABELS = ("version", "protocol", "python", "libzmq", "pyzmq", "msgpack")


def versions() -> dict[str, str]:
    """Every version busd_build_info reports."""
    return {
        "version": __version__,
        "protocol": str(PROTOCOL_VERSION),
        "python": platform.python_version(),
        "libzmq": zmq.zmq_version(),
        "pyzmq": zmq.pyzmq_version(),
        "msgpack": ".".join(str(part) for part in msgpack.version),
    }


def _parse(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
        if len(digits) != len(piece):  # 4.3.5rc1: stop at the suffix
            break
    return tuple(parts)


def refusals(found: Mapping[str, str] | None = None) -> list[str]:
    """One sentence per library below its floor (none when all are new enough)."""
    found = versions() if found is None else found
    problems = []
    for name, (floor, why) in FLOORS.items():
        have = found.get(name, "")
        if _parse(have) < floor:
            wanted = ".".join(map(str, floor))
            problems.append(f"{name} {have or '(unknown)'} is older than {wanted} ({why})")
    return problems
