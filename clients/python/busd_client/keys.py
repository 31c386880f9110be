"""Client keys for a busd with authentication on (docs/security.md).

A client proves its identity with its own CURVE key pair and checks busd's with busd's
public key. Both are ZeroMQ certificate files, as ``busdctl keys new NAME`` writes them:
``NAME.key`` (public, given to the operator for busd's keys directory) and
``NAME.key_secret`` (the pair, kept by the client, mode 0600).

Where a client finds them, first match wins: the ``keys=`` argument of a publisher or
subscriber; the environment, ``BUSD_KEY`` (the client's ``.key_secret`` file) and
``BUSD_SERVER_KEY`` (busd's public ``.key`` file); a pool file's ``key``/``server_key``.
Without keys a client speaks the NULL mechanism, which a busd with authentication on refuses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

__all__ = ["ClientKeys", "KeyError_", "new_key_pair"]

ENV_KEY = "BUSD_KEY"
ENV_SERVER_KEY = "BUSD_SERVER_KEY"


class KeyError_(ValueError):
    """A key file is missing or not a ZeroMQ certificate; the message names the file."""


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """A client's key pair and the server's public key, z85-encoded."""

    public: bytes
    secret: bytes
    server: bytes

    @staticmethod
    def load(key: str | os.PathLike[str], server_key: str | os.PathLike[str]) -> ClientKeys:
        public, secret = _read(key)
        if not secret:
            raise KeyError_(f"{key}: holds no secret key (give the .key_secret file)")
        server, _ = _read(server_key)
        return ClientKeys(public, secret, server)

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> ClientKeys | None:
        """The keys named by ``BUSD_KEY`` and ``BUSD_SERVER_KEY``; None when neither is set."""
        env = os.environ if env is None else env
        key, server = env.get(ENV_KEY), env.get(ENV_SERVER_KEY)
        if not key and not server:
            return None
        if not key or not server:
            raise KeyError_(f"set both {ENV_KEY} and {ENV_SERVER_KEY}, or neither")
        return ClientKeys.load(key, server)

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` a CURVE client of the server (before it connects)."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def _read(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise KeyError_(f"{path}: not a readable key certificate: {exc}") from None


def new_key_pair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) in ``directory``; refuses to
    overwrite either. Returns (public file, secret file)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    public, secret = root / f"{name}.key", root / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise KeyError_(f"{path} exists: remove it first to replace the key")
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        made_public, made_secret = zmq.auth.create_certificates(str(root), name)
    finally:
        os.umask(old)
    os.chmod(made_public, 0o644)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)
