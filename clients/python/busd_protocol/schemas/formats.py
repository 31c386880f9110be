"""String formats the schema compiler understands (JSON Schema ``format`` keyword).

Each format is a predicate on ``str``. Formats are assertions here, not annotations: a schema
naming a format busd does not know is refused at load, so a value is never silently unchecked.
Digits are ASCII digits only (``[0-9]``, never ``\\d``, which in Python matches every Unicode
digit). Written by hand on the standard library: each predicate is a few lines against its
RFC's grammar, and the JSON-Schema-Test-Suite's optional/format files judge them in CI.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import unicodedata
from collections.abc import Callable

# RFC 3986 URI: scheme ":" hier-part ["?" query] ["#" fragment]. "//" starts an authority:
# [userinfo "@"] host [":" port], the host an IP-literal in brackets or a reg-name; brackets
# appear nowhere else. Written for Python's re: possessive character classes and lookaheads,
# no optional groups (each costs the engine's general repeat); the common authority (a plain
# host name) takes the first branch, and any other (userinfo, port, IP-literal) is captured
# for ``authority_ok``. %-escapes are checked after the match, only when there are any.
_P = r"A-Za-z0-9\-._~!$&'()*+,;=%"  # unreserved, sub-delims, "%" (escapes checked apart)
_HIER = rf"//(?:[{_P}]*+|([{_P}:@\[\]]*+))(?![^/?#])[{_P}:@/]*+"
_TAIL = rf"[{_P}:@/?]*+#?[{_P}:@/?]*+"  # query, then at most one "#" and a fragment
_URI = re.compile(rf"[A-Za-z][A-Za-z0-9+.\-]*+:(?:{_HIER}|(?!//)[{_P}:@/]*+){_TAIL}")
# The common case alone (a plain host name, then path, query, fragment): a subset of _URI
# without its alternation or group, 40 ns less per slug; anything else takes _URI.
_URI_PLAIN = re.compile(
    rf"[A-Za-z][A-Za-z0-9+.\-]*+://[{_P}]*+(?![^/?#])[{_P}:@/?]*+#?[{_P}:@/?]*+"
)
# relative-ref: a URI without its scheme; its first path segment may not hold ":" (it would
# read as a scheme).
_RELATIVE = re.compile(rf"(?:{_HIER}|(?!//)[{_P}@]*+(?![^/?#])[{_P}:@/]*+){_TAIL}")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_IP_FUTURE = re.compile(r"[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+")

_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
_DATE_TIME = re.compile(rf"{_DATE}[Tt]{_TIME}")
_DATE_ONLY = re.compile(_DATE)
_TIME_ONLY = re.compile(_TIME)

_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

_UUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")
_JSON_POINTER = re.compile(r"(?:/(?:[^/~]|~[01])*)*")
# RFC 3339 appendix A (ISO 8601 durations): weeks stand alone; units descend, each once.
_DUR_TIME = r"T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)"
_DURATION = re.compile(
    rf"P(?:(?:[0-9]+D|[0-9]+M(?:[0-9]+D)?|[0-9]+Y(?:[0-9]+M(?:[0-9]+D)?)?)(?:{_DUR_TIME})?"
    rf"|{_DUR_TIME}|[0-9]+W)"
)
# RFC 5321 Mailbox: a dot-atom or a quoted string, "@", a host name or an address literal.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_LOCAL = re.compile(rf'{_ATEXT}(?:\.{_ATEXT})*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')

# The compiled expressions of "uri", for generated code that inlines the check (codegen.py).
URI_PLAIN_FULLMATCH = _URI_PLAIN.fullmatch
BAD_ESCAPE_SEARCH = _BAD_ESCAPE.search


def authority_ok(authority: str) -> bool:
    """[userinfo "@"] host [":" port] of a URI whose authority is not a plain host name."""
    userinfo, _, hostport = authority.rpartition("@")
    if "@" in userinfo or "[" in userinfo or "]" in userinfo:
        return False
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return False
        literal, port = hostport[1:end], hostport[end + 1 :]
        if _IP_FUTURE.fullmatch(literal) is None and not is_ipv6(literal):
            return False
    else:
        if "[" in hostport or "]" in hostport:
            return False
        port = hostport[hostport.find(":") :] if ":" in hostport else ""
    return not port or (port[0] == ":" and (port == ":" or port[1:].isdigit()))


def _uri_ok(match: re.Match[str] | None, value: str) -> bool:
    if match is None:
        return False
    if "%" in value and _BAD_ESCAPE.search(value) is not None:
        return False
    return match.lastindex is None or authority_ok(match[1])


def uri_general_ok(value: str) -> bool:
    """``value`` is an absolute URI by the whole grammar (%-escapes not checked)."""
    match = _URI.fullmatch(value)
    return match is not None and (match.lastindex is None or authority_ok(match[1]))


def is_uri(value: str) -> bool:
    if _URI_PLAIN.fullmatch(value) is None and not uri_general_ok(value):
        return False
    return "%" not in value or _BAD_ESCAPE.search(value) is None


def is_uri_reference(value: str) -> bool:
    return _uri_ok(_URI.fullmatch(value) or _RELATIVE.fullmatch(value), value)


def _leap_second_ok(hour: int, minute: int, sign: str | None, oh: int, om: int) -> bool:
    """Second 60 exists only as 23:59:60 UTC (RFC 3339 section 5.7)."""
    offset = 0 if sign is None else (oh * 60 + om) * (1 if sign == "+" else -1)
    return (hour * 60 + minute - offset) % 1440 == 23 * 60 + 59


def _time_ok(groups: tuple[str | None, ...]) -> bool:
    hour, minute, second = int(groups[0] or 0), int(groups[1] or 0), int(groups[2] or 0)
    sign = groups[4]
    oh, om = int(groups[5] or 0), int(groups[6] or 0)
    if hour > 23 or minute > 59 or second > 60 or oh > 23 or om > 59:
        return False
    return second < 60 or _leap_second_ok(hour, minute, sign, oh, om)


def _date_ok(year: str, month: str, day: str) -> bool:
    try:
        datetime.date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def is_date_time(value: str) -> bool:
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return False
    groups = match.groups()
    return _date_ok(*groups[:3]) and _time_ok(groups[3:])


def is_date(value: str) -> bool:
    match = _DATE_ONLY.fullmatch(value)
    return match is not None and _date_ok(*match.groups())


def is_time(value: str) -> bool:
    match = _TIME_ONLY.fullmatch(value)
    return match is not None and _time_ok(match.groups())


def is_duration(value: str) -> bool:
    return _DURATION.fullmatch(value) is not None


def _a_label_ok(label: str) -> bool:
    """An "xn--" label must be the Punycode of a U-label (RFC 5890/5891): it decodes, holds
    some non-ASCII, encodes back to itself, and the U-label has no "--" in its 3rd and 4th
    positions, no leading or trailing "-", no leading combining mark. (The IDNA2008 code point
    tables are not checked: that is format "idn-hostname", which busd does not support.)"""
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
        again = decoded.encode("punycode").decode("ascii")
    except (UnicodeError, ValueError):
        return False
    return (
        bool(decoded)
        and not decoded.isascii()
        and again.lower() == label[4:].lower()
        and decoded[2:4] != "--"
        and not decoded.startswith("-")
        and not decoded.endswith("-")
        and not unicodedata.category(decoded[0]).startswith("M")
        and "." not in decoded
    )


def is_hostname(value: str) -> bool:
    """RFC 1123 host name; one trailing dot (the DNS root, "example.") is accepted."""
    if len(value) > 253 or not value:
        return False
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    for label in labels:
        if _HOST_LABEL.fullmatch(label) is None:
            return False
        # Hyphens in the 3rd and 4th positions are reserved for A-labels (RFC 5891).
        if label[2:4] == "--" and (label[:2].lower() != "xn" or not _a_label_ok(label)):
            return False
    return True


def is_ipv4(value: str) -> bool:
    parts = value.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3:
            return False
        if (part[0] == "0" and len(part) > 1) or int(part) > 255:
            return False  # a leading zero reads as octal to some parsers: refused
    return True


def is_ipv6(value: str) -> bool:
    if not value.isascii() or "%" in value or value.strip() != value:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def is_email(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    if not at or _LOCAL.fullmatch(local) is None or len(local) > 64:  # ASCII: chars = octets
        return False
    if domain.startswith("[IPv6:") and domain.endswith("]"):
        return is_ipv6(domain[6:-1])
    if domain.startswith("[") and domain.endswith("]"):
        return is_ipv4(domain[1:-1])
    return not domain.endswith(".") and is_hostname(domain)


def is_uuid(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


def is_json_pointer(value: str) -> bool:
    return _JSON_POINTER.fullmatch(value) is not None


def is_regex(value: str) -> bool:
    """A pattern busd's ``pattern`` keyword would accept: Python's ``re`` syntax."""
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError, ValueError):
        return False
    return True


# Format name -> (predicate, what the reason calls it).
FORMATS: dict[str, tuple[Callable[[str], bool], str]] = {
    "uri": (is_uri, "an absolute URI"),
    "uri-reference": (is_uri_reference, "a URI reference"),
    "date-time": (is_date_time, "an RFC 3339 date-time"),
    "date": (is_date, "an RFC 3339 date"),
    "time": (is_time, "an RFC 3339 time"),
    "duration": (is_duration, "an ISO 8601 duration"),
    "hostname": (is_hostname, "a host name"),
    "email": (is_email, "an e-mail address"),
    "ipv4": (is_ipv4, "an IPv4 address"),
    "ipv6": (is_ipv6, "an IPv6 address"),
    "uuid": (is_uuid, "a UUID"),
    "json-pointer": (is_json_pointer, "a JSON pointer"),
    "regex": (is_regex, "a regular expression"),
}
