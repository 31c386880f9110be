"""String formats the schema compiler understands (JSON Schema ``format`` keyword).

Each format is a predicate on ``str``. Formats are assertions here, not annotations: a schema
naming a format busd does not know is refused at load, so a value is never silently unchecked.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable

# RFC 3986 absolute URI: a scheme, a colon, then only characters a URI may hold (unreserved,
# reserved or %-encoded). Checking the generic syntax only: enough to refuse spaces, control
# characters and relative references, cheap enough for every message. One character class
# first (4x faster than an alternation per character), the %-escapes only when there are any.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# RFC 3339 section 5.6 date-time, e.g. 2026-05-01T12:00:00.5Z or ...+02:00.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))"
)

# RFC 1123 host name: dot-separated labels of letters, digits and inner dashes.
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")


# The compiled expressions of "uri", for generated code that inlines the check (codegen.py).
URI_FULLMATCH = _URI.fullmatch
BAD_ESCAPE_SEARCH = _BAD_ESCAPE.search


def is_uri(value: str) -> bool:
    if _URI.fullmatch(value) is None:
        return False
    return "%" not in value or _BAD_ESCAPE.search(value) is None


def is_date_time(value: str) -> bool:
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    # Second 60 is a leap second, which RFC 3339 allows.
    if hour > 23 or minute > 59 or second > 60:
        return False
    off_hour, off_minute = match.group(7), match.group(8)
    return off_hour is None or (int(off_hour) <= 23 and int(off_minute) <= 59)


def is_hostname(value: str) -> bool:
    return len(value) <= 253 and _HOSTNAME.fullmatch(value) is not None


# Format name -> (predicate, what the reason calls it).
FORMATS: dict[str, tuple[Callable[[str], bool], str]] = {
    "uri": (is_uri, "an absolute URI"),
    "date-time": (is_date_time, "an RFC 3339 date-time"),
    "hostname": (is_hostname, "a host name"),
}
