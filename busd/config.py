"""One typed, validated configuration: defaults < TOML file < BUSD_* environment < flags."""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from busd_protocol.frames import DEFAULT_MAX_BATCH, MAX_BATCH_LIMIT


class ConfigError(ValueError):
    """A setting is missing, mistyped or out of range; the message names it."""


def _opt(help_text: str, unit: str = "") -> dict[str, Any]:
    return {"help": help_text, "unit": unit}


@dataclass(frozen=True, slots=True)
class Config:
    pub_endpoint: str = field(
        default="tcp://127.0.0.1:7401",
        metadata=_opt("publisher ingress (ROUTER) endpoint, tcp:// or ipc://"),
    )
    sub_endpoint: str = field(
        default="tcp://127.0.0.1:7402",
        metadata=_opt("subscriber egress (XPUB) endpoint, tcp:// or ipc://"),
    )
    control: str = field(
        default="", metadata=_opt("control socket path (default VAR_DIR/run/control.sock)")
    )
    rates_dir: str = field(
        default="",
        metadata=_opt("rates directory (default /etc/rates when it exists, else VAR_DIR/rates)"),
    )
    schemas_dir: str = field(default="schemas", metadata=_opt("message schemas directory"))
    metrics: str = field(
        default="127.0.0.1:7403",
        metadata=_opt("HOST:PORT for /metrics, /healthz, /readyz; 'off' disables"),
    )
    var_dir: str = field(default="var", metadata=_opt("directory for runtime files"))
    assertions: str = field(
        default="", metadata=_opt("service-level assertions file (TOML); empty: none")
    )
    schema_checks: str = field(
        default="on",
        metadata=_opt(
            "on: check every payload against its claimed schema version; off: accept any payload "
            "(for measuring, or an emergency; envelope checks stay on)"
        ),
    )
    rate_checks: str = field(
        default="on",
        metadata=_opt(
            "on: enforce the rates directory's limits; off: ignore them (files still watched)"
        ),
    )
    max_message_bytes: int = field(
        default=65536, metadata=_opt("largest envelope accepted; larger gets too_large", "bytes")
    )
    max_frame_bytes: int = field(
        default=1048576,
        metadata=_opt("ZMQ_MAXMSGSIZE: a larger frame drops the connection", "bytes"),
    )
    pub_hwm: int = field(
        default=10000, metadata=_opt("messages queued per publisher, each way", "messages")
    )
    reply_hwm: int = field(
        default=1000,
        metadata=_opt(
            "reply frames queued for one publisher; past it the publisher is not reading its "
            "replies: they are dropped and its connection is closed",
            "replies",
        ),
    )
    sub_hwm: int = field(
        default=10000, metadata=_opt("messages queued per subscriber before drops", "messages")
    )
    batch: int = field(
        default=256,
        metadata=_opt("messages handled per wake-up before yielding to other tasks", "messages"),
    )
    max_batch: int = field(
        default=DEFAULT_MAX_BATCH,
        metadata=_opt(
            "messages a publisher may send in one batch (one ZeroMQ message of 1 + 2K frames; "
            f"announced in every reply as `batch`); 1 to {MAX_BATCH_LIMIT}",
            "messages",
        ),
    )
    handshake_timeout: float = field(
        default=5.0,
        metadata=_opt(
            "a connection that has not completed the ZMTP 3 handshake by then is closed",
            "seconds",
        ),
    )
    heartbeat_interval: float = field(
        default=5.0,
        metadata=_opt("ZMTP PING to every peer this often; 0: no heartbeats", "seconds"),
    )
    heartbeat_timeout: float = field(
        default=15.0,
        metadata=_opt(
            "a peer that sends nothing (not even a PONG) this long after a PING is closed",
            "seconds",
        ),
    )
    max_subscriptions: int = field(
        default=1000,
        metadata=_opt(
            "topic prefixes applied per subscriber connection; more are denied, and a "
            "connection holding over 64 denied prefixes is closed",
            "prefixes",
        ),
    )
    subscription_batch: int = field(
        default=256,
        metadata=_opt("subscription requests handled per wake-up", "requests"),
    )
    frame_slice: int = field(
        default=4096,
        metadata=_opt(
            "frames of an over-long publish (a batch has at most 1 + 2 * max_batch) read and "
            "dropped per wake-up; "
            "the rest is read in later wake-ups, so the event loop is never held longer",
            "frames",
        ),
    )
    drain_timeout: float = field(
        default=5.0,
        metadata=_opt("on SIGTERM, longest time spent answering in-flight messages", "seconds"),
    )
    warmup: float = field(
        default=2.0,
        metadata=_opt(
            "after start, answer publishes with not_ready for this long so that subscribers "
            "reconnect first (a pool's restarted broker loses nothing); 0: none",
            "seconds",
        ),
    )
    linger: float = field(
        default=1.0,
        metadata=_opt("on close, longest time to flush replies and deliveries", "seconds"),
    )
    restart_budget: int = field(
        default=5,
        metadata=_opt("peripheral task restarts allowed per window before busd exits", "restarts"),
    )
    restart_window: float = field(
        default=60.0, metadata=_opt("window for restart_budget", "seconds")
    )
    curve_secret: str = field(
        default="",
        metadata=_opt(
            "the server's key pair (a .key_secret file from `busdctl keys new`): CURVE "
            "authentication on both endpoints; empty: authentication off (loopback only)"
        ),
    )
    keys_dir: str = field(
        default="",
        metadata=_opt("client public keys, NAME.key each (default VAR_DIR/keys)"),
    )
    acl: str = field(
        default="",
        metadata=_opt(
            "permissions file (TOML): publish and subscribe prefixes per identity; "
            "empty: every known key may do everything"
        ),
    )
    insecure: str = field(
        default="off",
        metadata={
            **_opt("on: allow a non-loopback tcp:// endpoint without authentication"),
            "bare_flag": "on",
        },
    )
    loop: str = field(default="uvloop", metadata=_opt("event loop: uvloop or asyncio"))
    log_format: str = field(
        default="auto", metadata=_opt("auto (JSON unless stderr is a terminal), json or text")
    )
    log_level: str = field(default="info", metadata=_opt("debug, info, warning or error"))

    @property
    def control_path(self) -> Path:
        return Path(self.control) if self.control else Path(self.var_dir) / "run" / "control.sock"

    @property
    def rates_path(self) -> Path:
        if self.rates_dir:
            return Path(self.rates_dir)
        etc = Path("/etc/rates")
        return etc if etc.is_dir() else Path(self.var_dir) / "rates"

    @property
    def keys_path(self) -> Path:
        return Path(self.keys_dir) if self.keys_dir else Path(self.var_dir) / "keys"

    @property
    def authenticated(self) -> bool:
        return bool(self.curve_secret)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        if self.metrics in ("", "off"):
            return None
        host, _, port = self.metrics.rpartition(":")
        return host.strip("[]"), int(port)

    def validate(self) -> Config:
        for name in ("pub_endpoint", "sub_endpoint"):
            value = getattr(self, name)
            if not value.startswith(("tcp://", "ipc://", "inproc://")):
                raise ConfigError(
                    f"{name}: expected a tcp://, ipc:// or inproc:// endpoint, got {value!r}"
                )
            if value.startswith("tcp://"):
                host, sep, port = value[len("tcp://") :].rpartition(":")
                if not (sep and host and (port == "*" or _port(port))):
                    raise ConfigError(
                        f"{name}: expected tcp://HOST:PORT (PORT 0-65535), got {value!r}"
                    )
        # Port 0 twice is two ports the kernel picks (tests and `make run` use it).
        if self.pub_endpoint == self.sub_endpoint and not self.pub_endpoint.endswith(":0"):
            raise ConfigError("pub_endpoint and sub_endpoint must differ")
        if self.metrics not in ("", "off"):
            host, sep, port = self.metrics.rpartition(":")
            if not sep or not host or not _port(port):
                raise ConfigError(f"metrics: expected HOST:PORT or 'off', got {self.metrics!r}")
        for name in (
            "max_message_bytes",
            "max_frame_bytes",
            "pub_hwm",
            "reply_hwm",
            "sub_hwm",
            "batch",
            "max_batch",
            "frame_slice",
            "max_subscriptions",
            "subscription_batch",
            "restart_budget",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected an integer >= 1")
        if self.max_batch > MAX_BATCH_LIMIT:
            raise ConfigError(f"max_batch: expected an integer from 1 to {MAX_BATCH_LIMIT}")
        if self.max_message_bytes > self.max_frame_bytes:
            raise ConfigError("max_message_bytes must not exceed max_frame_bytes")
        for name in (
            "drain_timeout",
            "warmup",
            "linger",
            "restart_window",
            "heartbeat_interval",
            "heartbeat_timeout",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name}: expected a finite number of seconds >= 0, got {value}")
        if not 0.001 <= self.handshake_timeout <= 3600:
            raise ConfigError("handshake_timeout: expected 0.001 to 3600 seconds")
        if self.heartbeat_interval and self.heartbeat_timeout < self.heartbeat_interval:
            raise ConfigError("heartbeat_timeout must be at least heartbeat_interval")
        if not self.authenticated and self.insecure != "on":
            for name in ("pub_endpoint", "sub_endpoint"):
                value = getattr(self, name)
                if not _loopback(value):
                    raise ConfigError(
                        f"{name}: {value} is reachable from other hosts and authentication "
                        "is off: set curve_secret (docs/security.md), or say --insecure"
                    )
        for name in ("schema_checks", "rate_checks", "insecure"):
            if getattr(self, name) not in ("on", "off"):
                raise ConfigError(f"{name}: expected on or off")
        if self.loop not in ("uvloop", "asyncio"):
            raise ConfigError("loop: expected uvloop or asyncio")
        if self.log_format not in ("auto", "json", "text"):
            raise ConfigError("log_format: expected auto, json or text")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level: expected debug, info, warning or error")
        return self


def _port(text: str) -> bool:
    return text.isdecimal() and text.isascii() and int(text) <= 65535


_LOOPBACK_HOSTS = ("localhost", "[::1]", "::1")


def _loopback(endpoint: str) -> bool:
    """Whether a tcp:// endpoint binds only loopback (ipc:// and inproc:// always do)."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://") :].rpartition(":")[0]
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _coerce(name: str, kind: type, value: object, source: str) -> object:
    if kind is int and isinstance(value, str):
        if not value.strip().isdecimal():
            raise ConfigError(f"{name} ({source}): expected an integer, got {value!r}")
        return int(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name} ({source}): expected a number, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(
            f"{name} ({source}): expected {kind.__name__}, got {type(value).__name__}"
        )
    return value


_KINDS: dict[str, type] = {"str": str, "int": int, "float": float}


def _fields() -> list[dataclasses.Field[Any]]:
    return list(fields(Config))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per setting, help from the field metadata."""
    for f in _fields():
        unit = f.metadata.get("unit")
        help_text = f"{f.metadata['help']} (default: {f.default!r}{' ' + unit if unit else ''})"
        bare = f.metadata.get("bare_flag")
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            help=help_text,
            metavar=f.name.upper(),
            **({"nargs": "?", "const": bare} if bare else {}),
        )


def load(
    flags: Mapping[str, object | None], env: Mapping[str, str], config_file: str | None
) -> Config:
    values: dict[str, tuple[object, str]] = {}
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"--config {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {config_file}: {exc}") from None
        known = {f.name for f in _fields()}
        for key in data:
            if key not in known:
                raise ConfigError(f"{config_file}: unknown key {key!r}")
        values.update({k: (v, config_file) for k, v in data.items()})
    for f in _fields():
        env_value = env.get("BUSD_" + f.name.upper())
        if env_value is not None:
            values[f.name] = (env_value, "BUSD_" + f.name.upper())
        flag_value = flags.get(f.name)
        if flag_value is not None:
            values[f.name] = (flag_value, "--" + f.name.replace("_", "-"))
    kwargs: dict[str, Any] = {}
    for f in _fields():
        if f.name in values:
            raw, source = values[f.name]
            kwargs[f.name] = _coerce(f.name, _KINDS[str(f.type)], raw, source)
    return Config(**kwargs).validate()


def describe(config: Config) -> dict[str, object]:
    out: dict[str, object] = {f.name: getattr(config, f.name) for f in _fields()}
    out["control"] = str(config.control_path)
    out["rates_dir"] = str(config.rates_path)
    return out
