"""Keys for the CURVE row: busd with authentication on, against the same busd without it.

One server key pair and one client key pair per identity the benchmark speaks as, made
with ``busd_client.keys.new_key_pair`` (what ``busdctl keys new`` writes): ``bench`` (the
publishers: busd binds the envelope's ``publisher`` to the key's name, and
``bench.message.PUBLISHER`` is ``bench``), ``bench-probe`` (the probe's disabled key) and
``bench-sub`` (the subscribers). Workers find theirs in the environment, ``BUSD_KEY`` and
``BUSD_SERVER_KEY``, like any busd_client application.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import message

SERVER = "server"
SUBSCRIBER = "bench-sub"
IDENTITIES = (message.PUBLISHER, message.PROBE_PUBLISHER, SUBSCRIBER)
ENV_KEY = "BUSD_KEY"  # busd_client.keys.ENV_KEY, named here so workers need no import
ENV_SERVER_KEY = "BUSD_SERVER_KEY"


@dataclass(frozen=True)
class CurveKeys:
    """Where the key files are: ``root/server.key{,_secret}``, ``root/clients/NAME.key``
    (busd's keys directory) and ``root/secrets/NAME.key_secret`` (the clients' pairs)."""

    root: Path

    @property
    def server_secret(self) -> Path:
        return self.root / f"{SERVER}.key_secret"

    @property
    def server_public(self) -> Path:
        return self.root / f"{SERVER}.key"

    @property
    def keys_dir(self) -> Path:
        return self.root / "clients"

    def client_secret(self, name: str) -> Path:
        return self.root / "secrets" / f"{name}.key_secret"

    def busd_flags(self) -> tuple[str, ...]:
        return ("--curve-secret", str(self.server_secret), "--keys-dir", str(self.keys_dir))

    def env(self, name: str) -> dict[str, str]:
        """The environment that makes a busd_client socket a CURVE client as ``name``."""
        return {ENV_KEY: str(self.client_secret(name)), ENV_SERVER_KEY: str(self.server_public)}

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def make_keys() -> CurveKeys:
    """A fresh server pair and one pair per benchmark identity, in a new temp directory."""
    from busd_client.keys import new_key_pair

    keys = CurveKeys(Path(tempfile.mkdtemp(prefix="bench-curve-")))
    new_key_pair(keys.root, SERVER)
    keys.keys_dir.mkdir()
    for name in IDENTITIES:
        public, _ = new_key_pair(keys.root / "secrets", name)
        public.rename(keys.keys_dir / public.name)
    return keys
