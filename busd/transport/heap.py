"""Handing freed heap memory back to the system after an attack (glibc's ``malloc_trim``).

libzmq allocates a connection's frames and subscription tries from its I/O thread; glibc
keeps chunks freed in a thread arena for reuse instead of returning them to the kernel, so
after millions of frames were discarded, or a subscription storm's connection closed, RSS
would stay up until a restart. ``release()`` costs a few milliseconds for a large heap and
is called only after such an event, never on the message path.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_trim() -> Callable[[], object]:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc: nothing to do
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


release: Callable[[], object] = _find_trim()
