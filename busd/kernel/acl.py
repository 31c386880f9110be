"""Permissions: which authenticated identity may publish and subscribe to which topics.

An identity is the name of a client key (``NAME.key`` in the keys directory); libzmq's
CURVE handshake proves it and busd reads it from each message's ``User-Id`` property, never
from the payload. The permissions file (TOML) grants each identity topic prefixes::

    [identities.deployer]
    publish = ["release."]
    subscribe = []

    [identities.router]
    subscribe = ["instance-state.", "release."]

ZeroMQ's prefix semantics, done right: a topic may be published when it *starts with* a
granted publish prefix; a subscription is allowed only when the requested prefix starts with
a granted subscribe prefix, so ``""`` (everything) and ``"o"`` are denied to an identity
granted ``"orders."`` — either would deliver more than ``orders.``. An identity missing from
the file is granted nothing. ``"*"`` grants every topic (write it only on purpose).

Pure: parsing is ``tomllib`` on text handed in; nothing here reads a file or a clock.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from busd_protocol.envelope import PUBLISHER_NAME, PUBLISHER_RULE

__all__ = ["ANY_TOPIC", "Acl", "AclError", "Grant", "Trust"]

ANY_TOPIC: Final = "*"
MAX_PREFIXES: Final = 1024  # per identity and direction: a file, not a database
MAX_PREFIX_BYTES: Final = 255
_CACHE_MAX: Final = 65536


class AclError(ValueError):
    """The permissions file is not valid; the message names the identity and key."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one identity may do: topic prefixes to publish to and to subscribe to."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


def _covers(granted: tuple[str, ...], prefix: str) -> bool:
    return any(g == ANY_TOPIC or prefix.startswith(g) for g in granted)


class Acl:
    """An immutable permissions value (its decision memo is the owner's, like token counts)."""

    __slots__ = ("_grants", "_published")

    def __init__(self, grants: Mapping[str, Grant]) -> None:
        self._grants: Mapping[str, Grant] = MappingProxyType(dict(grants))
        self._published: dict[tuple[str, str], bool] = {}

    @property
    def grants(self) -> Mapping[str, Grant]:
        return self._grants

    def may_publish(self, identity: str, topic: str) -> bool:
        """``topic`` starts with one of ``identity``'s publish prefixes."""
        key = (identity, topic)
        memo = self._published
        allowed = memo.get(key)
        if allowed is None:
            grant = self._grants.get(identity)
            allowed = grant is not None and _covers(grant.publish, topic)
            if len(memo) >= _CACHE_MAX:
                memo.clear()  # bounded: topics repeat, so the memo refills at once
            memo[key] = allowed
        return allowed

    def may_subscribe(self, identity: str, prefix: str) -> bool:
        """The requested ``prefix`` starts with one of ``identity``'s subscribe prefixes."""
        grant = self._grants.get(identity)
        return grant is not None and _covers(grant.subscribe, prefix)

    @staticmethod
    def parse(text: str, source: str = "permissions") -> Acl:
        """An ``Acl`` from the permissions file's text; raises ``AclError`` saying why not."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AclError(f"{source}: not valid TOML: {exc}") from None
        unknown = set(doc) - {"identities"}
        if unknown:
            raise AclError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}")
        table = doc.get("identities", {})
        if not isinstance(table, dict):
            raise AclError(f"{source}: [identities] must be a table")
        grants = {name: _grant(source, name, value) for name, value in table.items()}
        return Acl(grants)


def _grant(source: str, name: str, value: Any) -> Grant:
    where = f"{source}: identities.{name}"
    if PUBLISHER_NAME.fullmatch(name) is None:
        raise AclError(f"{where}: an identity name is {PUBLISHER_RULE}")
    if not isinstance(value, dict):
        raise AclError(f"{where}: must be a table with publish and subscribe lists")
    unknown = set(value) - {"publish", "subscribe"}
    if unknown:
        raise AclError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    return Grant(
        _prefixes(where, "publish", value.get("publish", [])),
        _prefixes(where, "subscribe", value.get("subscribe", [])),
    )


def _prefixes(where: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise AclError(f"{where}.{key}: expected a list of topic prefixes (strings)")
    if len(value) > MAX_PREFIXES:
        raise AclError(f"{where}.{key}: at most {MAX_PREFIXES} prefixes")
    for prefix in value:
        if not prefix:
            raise AclError(f'{where}.{key}: "" would grant every topic; write "*" if you mean it')
        if len(prefix.encode()) > MAX_PREFIX_BYTES:
            raise AclError(f"{where}.{key}: a prefix is at most {MAX_PREFIX_BYTES} bytes")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Trust:
    """Who is known (the names of the keys directory) and what each may do.

    ``acl`` None: every known identity may publish and subscribe to every topic (keys alone
    authenticate). A name no longer in ``identities`` was revoked: its connections, still
    open, are refused from the next message on.
    """

    identities: frozenset[str]
    acl: Acl | None = None

    def publish_refusal(self, identity: str, topic: str) -> str | None:
        """Why ``identity`` may not publish to ``topic``, or None when it may."""
        if identity not in self.identities:
            return f"the key {identity} was revoked"
        if self.acl is not None and not self.acl.may_publish(identity, topic):
            return f"identity {identity} may not publish to topic {topic[:64]}"
        return None

    def may_subscribe(self, identity: str, prefix: str) -> bool:
        if identity not in self.identities:
            return False
        return self.acl is None or self.acl.may_subscribe(identity, prefix)
