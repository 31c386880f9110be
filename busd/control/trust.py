"""Keys and permissions at run time: load at start, reload on SIGHUP or `trust.reload`,
answer `acl.show` (docs/security.md).

- The server's key pair: a ZeroMQ certificate file with its secret key (``curve_secret``,
  written by ``busdctl keys new``); without one, authentication is off.
- The keys directory: one public certificate per client identity, ``NAME.key``; the file
  name is the identity. Other files (``*.key_secret``, editor backups) are ignored.
- The permissions file (``acl``, TOML, ``busd.kernel.acl``): optional; without it every known
  key may publish and subscribe to everything.

A reload reads everything again and installs a new immutable ``Trust`` value between two
messages, or refuses the whole new state and keeps the old one (a typo never revokes
everyone, nor grants anyone). The key ring the ZAP handler reads is swapped at the same time.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq.auth

from busd.control.server import ControlError, Handler
from busd.kernel.acl import Acl, AclError, Trust
from busd.kernel.admission import Admission
from busd.logs import get
from busd.statistics import TrustStatistics
from busd_protocol.envelope import PUBLISHER_NAME, PUBLISHER_RULE

log = get("trust")
MAX_KEYS = 100_000
RECENT_DENIALS = 100


class TrustError(ValueError):
    """The keys directory, a key file or the permissions file is not usable."""


@dataclass(frozen=True, slots=True)
class Denial:
    at: float  # wall-clock seconds
    identity: str
    what: str  # "publish" or "subscribe"
    topic: str


def server_keys(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a certificate file holding the secret key."""
    try:
        public, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise TrustError(f"{path}: cannot read the server key pair: {exc}") from None
    if not secret:
        raise TrustError(f"{path}: holds no secret key (give the .key_secret file)")
    return public, secret


def read_keys(directory: str | os.PathLike[str]) -> dict[bytes, str]:
    """The key ring of a keys directory: z85 public key -> identity name."""
    root = Path(directory)
    if not root.is_dir():
        raise TrustError(f"{root}: the keys directory does not exist")
    ring: dict[bytes, str] = {}
    for path in sorted(root.glob("*.key")):
        name = path.name[: -len(".key")]
        if PUBLISHER_NAME.fullmatch(name) is None:
            raise TrustError(f"{path}: an identity name is {PUBLISHER_RULE}")
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            raise TrustError(f"{path}: not a public key certificate: {exc}") from None
        if public in ring:
            raise TrustError(f"{path}: the same key as {ring[public]}.key")
        ring[public] = name
        if len(ring) > MAX_KEYS:
            raise TrustError(f"{root}: more than {MAX_KEYS} keys")
    return ring


def read_acl(path: str | os.PathLike[str]) -> Acl:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustError(f"{path}: cannot read the permissions file: {exc}") from None
    try:
        return Acl.parse(text, os.fspath(path))
    except AclError as exc:
        raise TrustError(str(exc)) from None


class TrustControl:
    """The key ring for the ZAP handler, the ``Trust`` in ``Admission``, the commands."""

    def __init__(self, keys_dir: str, acl_path: str, admission: Admission) -> None:
        self.keys_dir = keys_dir
        self.acl_path = acl_path
        self.admission = admission
        self.ring: dict[bytes, str] = {}
        self.trust: Trust | None = None
        self.reloads = 0
        self.reload_failures = 0
        self.last_error = ""
        self.denials: deque[Denial] = deque(maxlen=RECENT_DENIALS)

    def key_ring(self) -> dict[bytes, str]:
        """The ring in force (the ZAP handler calls this at every handshake)."""
        return self.ring

    def _read(self) -> tuple[dict[bytes, str], Trust]:
        ring = read_keys(self.keys_dir)
        acl = read_acl(self.acl_path) if self.acl_path else None
        return ring, Trust(frozenset(ring.values()), acl)

    def load(self) -> None:
        """At start-up; raises ``TrustError`` (busd refuses to start)."""
        self.ring, self.trust = self._read()
        self.admission.install_trust(self.trust)
        log.info("keys loaded", extra=self._summary())

    def reload(self) -> dict[str, Any]:
        """Read again; install or keep the old state. Raises ``TrustError``."""
        try:
            ring, trust = self._read()
        except TrustError as exc:
            self.reload_failures += 1
            self.last_error = str(exc)
            log.error("keys reload refused; the previous keys stay", extra={"error": str(exc)})
            raise
        revoked = sorted(set(self.ring.values()) - set(ring.values()))
        self.ring, self.trust = ring, trust
        self.admission.install_trust(trust)
        self.reloads += 1
        self.last_error = ""
        log.info("keys reloaded", extra={**self._summary(), "revoked": revoked[:64]})
        return {**self._summary(), "revoked": revoked}

    def request_reload(self) -> None:
        """SIGHUP hook: reload now (small files), errors logged and counted."""
        with contextlib.suppress(TrustError):  # logged and counted by reload
            self.reload()

    def denied(self, identity: str, what: str, topic: str) -> None:
        """Remember a refusal for `acl.show` (bounded)."""
        self.denials.append(Denial(time.time(), identity, what, topic[:255]))

    def _summary(self) -> dict[str, Any]:
        acl = self.trust.acl if self.trust is not None else None
        return {"identities": len(self.ring), "permissions": bool(acl)}

    def statistics(self) -> TrustStatistics:
        return TrustStatistics(
            True, len(self.ring), self.reloads, self.reload_failures, self.last_error
        )

    def handlers(self) -> dict[str, Handler]:
        return {"trust.reload": self._reload_command, "acl.show": self._show_command}

    async def _reload_command(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.reload()
        except TrustError as exc:
            raise ControlError("bad_trust", str(exc)) from None

    async def _show_command(self, args: dict[str, Any]) -> dict[str, Any]:
        trust = self.trust
        acl = trust.acl if trust is not None else None
        identities: dict[str, Any] = {}
        for name in sorted(set(self.ring.values())):
            grant = acl.grants.get(name) if acl is not None else None
            if acl is None:
                identities[name] = {"publish": ["*"], "subscribe": ["*"]}
            else:
                identities[name] = {
                    "publish": list(grant.publish) if grant else [],
                    "subscribe": list(grant.subscribe) if grant else [],
                }
        return {
            "permissions_file": self.acl_path or None,
            "identities": identities,
            "recent_denials": [
                {"at": d.at, "identity": d.identity, "what": d.what, "topic": d.topic}
                for d in self.denials
            ],
        }


DenyHook = Callable[[str, str, str], None]
