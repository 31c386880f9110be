"""The trust boundary: with authentication on, only known keys get a message in, under their
own name and within their permissions; legacy ZMTP peers are refused with it on or off."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from conftest import BusdProcess, wait_for
from opshttp import scrape
from opshttp import value as metric

from busd_client import Publisher, PublishTimeout, Rejected, Subscriber
from busd_client.control import ControlClient, ControlError
from busd_client.keys import ClientKeys, new_key_pair

pytestmark = pytest.mark.timeout(60)

DATA = {
    "slug": "https://apps.example/shop/releases/42",
    "cmd": "bin/web",
    "env": {"RACK_ENV": "production"},
}
ACL = """
[identities.deployer]
publish = ["release.", "orders."]
subscribe = ["release."]

[identities.reader]
subscribe = ["release."]

[identities.auditor]
subscribe = ["release.eu."]
"""


class Keys:
    """A server key pair, client key pairs, and busd's keys directory, as files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "keys"  # busd's keys directory: public keys only
        self.clients = root / "clients"  # what the clients keep
        _, self.server_secret = new_key_pair(root / "server", "server")
        self.server_public = root / "server" / "server.key"

    def client(self, name: str, known: bool = True) -> ClientKeys:
        public, secret = new_key_pair(self.clients, name)
        if known:
            self.dir.mkdir(exist_ok=True)
            (self.dir / public.name).write_bytes(public.read_bytes())
        return ClientKeys.load(secret, self.server_public)

    def busd_args(self, acl: Path) -> tuple[str, ...]:
        """busd's command-line arguments for these keys and the permissions file ``acl``."""
        return (
            "--curve-secret",
            str(self.server_secret),
            "--keys-dir",
            str(self.dir),
            "--acl",
            str(acl),
        )

    def env(self, name: str) -> dict[str, str]:
        return {
            "BUSD_KEY": str(self.clients / f"{name}.key_secret"),
            "BUSD_SERVER_KEY": str(self.server_public),
        }


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "trust")


@pytest.fixture
def secure_busd(busd_factory: Callable[..., BusdProcess], keys: Keys) -> BusdProcess:
    keys.client("deployer")
    keys.client("reader")
    keys.client("auditor")
    keys.client("stranger", known=False)
    acl = keys.root / "acl.toml"
    acl.write_text(ACL)
    keys.dir.mkdir(exist_ok=True)
    return busd_factory(extra_args=keys.busd_args(acl))


@pytest.fixture
def as_identity(monkeypatch: pytest.MonkeyPatch, keys: Keys) -> Iterator[Callable[[str], None]]:
    def use(name: str) -> None:
        for key, value in keys.env(name).items():
            monkeypatch.setenv(key, value)

    yield use


def _publisher(busd: BusdProcess, name: str, timeout: float = 5.0) -> Publisher:
    return Publisher(busd.pub_endpoint, name=name, timeout=timeout)


def test_a_known_key_publishes_under_its_own_name(
    secure_busd: BusdProcess, as_identity: Callable[[str], None]
) -> None:
    as_identity("deployer")
    with _publisher(secure_busd, "deployer") as pub:
        pub.publish_wait("release.shop", "release", 2, DATA)


def test_a_client_without_keys_never_gets_a_message_in(secure_busd: BusdProcess) -> None:
    """NULL mechanism against a CURVE server: the handshake fails, nothing is sent."""
    with _publisher(secure_busd, "deployer", timeout=1.5) as pub:
        with pytest.raises(PublishTimeout) as info:
            pub.publish_wait("release.shop", "release", 2, DATA)
        assert info.value.sent is False


def test_an_unknown_key_never_gets_a_message_in(
    secure_busd: BusdProcess, as_identity: Callable[[str], None]
) -> None:
    """Refused at the handshake, and counted for the operator."""
    as_identity("stranger")
    with _publisher(secure_busd, "stranger", timeout=1.5) as pub:
        with pytest.raises(PublishTimeout) as info:
            pub.publish_wait("release.shop", "release", 2, DATA)
        assert info.value.sent is False
    assert metric(scrape(secure_busd.metrics), "busd_zap_denied_total") >= 1
    assert metric(scrape(secure_busd.metrics), "busd_identities") == 3  # deployer, reader, auditor


def test_a_wrong_server_key_never_connects(
    secure_busd: BusdProcess, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor, _ = new_key_pair(keys.root / "impostor", "server")
    monkeypatch.setenv("BUSD_KEY", str(keys.clients / "deployer.key_secret"))
    monkeypatch.setenv("BUSD_SERVER_KEY", str(impostor))
    with _publisher(secure_busd, "deployer", timeout=1.5) as pub, pytest.raises(PublishTimeout):
        pub.publish_wait("release.shop", "release", 2, DATA)


def test_a_plain_mechanism_client_is_refused(secure_busd: BusdProcess) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.plain_username, sock.plain_password = b"deployer", b"guess"
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(secure_busd.pub_endpoint)
        time.sleep(0.5)  # give the handshake its chance to (wrongly) complete
        with pytest.raises(zmq.Again):
            sock.send(b"x", zmq.NOBLOCK)  # IMMEDIATE: no completed connection to queue on
    finally:
        sock.close(linger=0)
        ctx.term()


def test_an_identity_publishing_as_another_name_is_forbidden(
    secure_busd: BusdProcess, as_identity: Callable[[str], None]
) -> None:
    as_identity("deployer")
    with _publisher(secure_busd, "reader") as pub, pytest.raises(Rejected) as info:
        pub.publish_wait("release.shop", "release", 2, DATA)
    assert info.value.code == "forbidden"
    assert "deployer" in info.value.reason


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("orders.eu", True),
        ("orders", False),
        ("order", False),
        ("ORDERS.x", False),
        ("payments.x", False),
    ],
)
def test_publishing_outside_the_permissions_is_forbidden(
    secure_busd: BusdProcess, as_identity: Callable[[str], None], topic: str, allowed: bool
) -> None:
    """deployer may publish release. and orders.: a prefix match, case-sensitive."""
    as_identity("deployer")
    with _publisher(secure_busd, "deployer") as pub:
        receipt = pub.publish(topic, "release", 2, DATA)
        pub.flush(5)
        try:
            receipt.result(5)
            verdict = "accepted"
        except Rejected as exc:
            verdict = exc.code
    # orders.* has no schema route: accepted by the permissions, refused by the schema gate.
    assert (verdict != "forbidden") is allowed, verdict


def test_a_subscribe_only_identity_cannot_publish(
    secure_busd: BusdProcess, as_identity: Callable[[str], None]
) -> None:
    as_identity("reader")
    with _publisher(secure_busd, "reader") as pub, pytest.raises(Rejected) as info:
        pub.publish_wait("release.shop", "release", 2, DATA)
    assert info.value.code == "forbidden"


def test_a_revoked_key_is_refused_at_once_and_makes_no_new_connection(
    secure_busd: BusdProcess, keys: Keys, as_identity: Callable[[str], None]
) -> None:
    """Revocation at run time: the open connection's next publish is refused; a new
    connection with the same key never completes its handshake."""
    as_identity("deployer")
    with _publisher(secure_busd, "deployer") as pub:
        pub.publish_wait("release.shop", "release", 2, DATA)
        (keys.dir / "deployer.key").unlink()
        secure_busd.signal(signal.SIGHUP)
        secure_busd.wait_log("keys reloaded", revoked=["deployer"])
        with pytest.raises(Rejected) as info:
            pub.publish_wait("release.shop", "release", 2, DATA)
        assert info.value.code == "forbidden" and "revoked" in info.value.reason
    with _publisher(secure_busd, "deployer", timeout=1.5) as fresh:
        with pytest.raises(PublishTimeout) as timeout:
            fresh.publish_wait("release.shop", "release", 2, DATA)
        assert timeout.value.sent is False


def test_a_broken_permissions_file_keeps_the_old_permissions(
    secure_busd: BusdProcess, keys: Keys, as_identity: Callable[[str], None]
) -> None:
    (keys.root / "acl.toml").write_text("[identities.deployer]\npublish = [1]\n")
    with ControlClient(secure_busd.control) as control, pytest.raises(ControlError) as info:
        control.call("trust.reload")
    assert info.value.code == "bad_trust" and "publish" in str(info.value)
    as_identity("deployer")
    with _publisher(secure_busd, "deployer") as pub:
        pub.publish_wait("release.shop", "release", 2, DATA)


def test_acl_show_lists_identities_and_their_prefixes(secure_busd: BusdProcess) -> None:
    with ControlClient(secure_busd.control) as control:
        shown = control.call("acl.show")
    assert shown["identities"]["deployer"] == {
        "publish": ["release.", "orders."],
        "subscribe": ["release."],
    }
    assert shown["identities"]["reader"] == {"publish": [], "subscribe": ["release."]}
    assert "stranger" not in shown["identities"]


def _held_open(port: int, payload: bytes, within: float) -> bool:
    """Whether busd still holds a raw TCP connection open ``within`` seconds after
    ``payload``; the bytes it sent back are discarded."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            try:
                if not conn.recv(4096):
                    return False  # closed by busd
            except TimeoutError:
                break
            except ConnectionResetError:
                return False
        return True


@pytest.mark.parametrize("role", ["pub", "sub"])
@pytest.mark.parametrize(
    "payload", [b"\x01\x00", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], ids=["zmtp10", "http"]
)
def test_a_legacy_or_http_peer_is_closed_at_once_with_authentication_off(
    busd: BusdProcess, role: str, payload: bytes
) -> None:
    """ZAP is on even without keys, and libzmq refuses ZMTP/1.0 on a ZAP socket."""
    port = busd.pub_port if role == "pub" else busd.sub_port
    assert not _held_open(port, payload, within=3.0)


@pytest.mark.parametrize("role", ["pub", "sub"])
def test_a_legacy_peer_is_closed_with_authentication_on(
    secure_busd: BusdProcess, role: str
) -> None:
    port = secure_busd.pub_port if role == "pub" else secure_busd.sub_port
    assert not _held_open(port, b"\x01\x00", within=3.0)


def test_two_raw_bytes_no_longer_read_other_services_messages(busd: BusdProcess) -> None:
    """The phantom subscribe-all: a raw `\\x01\\x00` on the subscriber port got everything."""
    with (
        Subscriber(busd.sub_endpoint, ["release."]) as canary,
        Publisher(busd.pub_endpoint, name="deployer") as pub,
        socket.create_connection(("127.0.0.1", busd.sub_port), timeout=5) as raw,
    ):
        raw.sendall(b"\x01\x00")

        def delivered() -> bool:
            pub.publish_wait("release.shop", "release", 2, DATA)
            return canary.recv(timeout=0.2) is not None

        wait_for(delivered, timeout=10, what="the canary receiving")
        for _ in range(50):
            pub.publish("release.shop", "release", 2, DATA)
        assert pub.flush(5) == []
        raw.settimeout(1.0)
        got = b""
        try:
            while chunk := raw.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        assert b"release.shop" not in got


def test_busd_refuses_a_non_loopback_endpoint_without_authentication(tmp_path: Path) -> None:
    busd = str(Path(sys.executable).parent / "busd")
    proc = subprocess.run(
        [busd, "--pub-endpoint", "tcp://0.0.0.0:0", "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode != 0
    assert "authentication" in proc.stderr and "--insecure" in proc.stderr
    ok = subprocess.run(
        [
            busd,
            "--pub-endpoint",
            "tcp://0.0.0.0:0",
            "--insecure",
            "--schemas-dir",
            str(Path(__file__).resolve().parents[1] / "schemas"),
            "--check-config",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr


def _busdctl(*argv: str) -> subprocess.CompletedProcess[str]:
    tool = str(Path(sys.executable).parent / "busdctl")
    return subprocess.run([tool, *argv], capture_output=True, text=True, timeout=30, check=False)


def test_busdctl_keys_new_writes_a_pair_with_safe_modes(tmp_path: Path) -> None:
    done = _busdctl("keys", "new", "billing", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    public, secret = tmp_path / "billing.key", tmp_path / "billing.key_secret"
    assert public.stat().st_mode & 0o777 == 0o644
    assert secret.stat().st_mode & 0o777 == 0o600
    again = _busdctl("keys", "new", "billing", "--dir", str(tmp_path))
    assert again.returncode == 1 and "exists" in again.stderr
    assert _busdctl("keys", "new", "bad name", "--dir", str(tmp_path)).returncode == 2


def test_busdctl_acl_shows_the_loaded_permissions(secure_busd: BusdProcess) -> None:
    shown = _busdctl("acl", "--control", secure_busd.control)
    assert shown.returncode == 0, shown.stderr
    assert "deployer" in shown.stdout and "release.,orders." in shown.stdout
    reloaded = _busdctl("acl", "reload", "--control", secure_busd.control)
    assert reloaded.returncode == 0 and "revoked: none" in reloaded.stdout


def test_busdctl_acl_says_when_authentication_is_off(busd: BusdProcess) -> None:
    shown = _busdctl("acl", "--control", busd.control)
    assert shown.returncode == 1 and "without authentication" in shown.stderr


def _forbidden_subscriptions(busd: BusdProcess) -> int:
    with ControlClient(busd.control) as control:
        return int(control.call("stats")["stats"]["broker"]["subscriptions_forbidden"])


@pytest.mark.parametrize(
    ("prefix", "allowed"),
    [
        ("", False),
        ("r", False),
        ("release.eu", False),
        ("release.eu.", True),
        ("release.eu.x", True),
    ],
)
def test_a_subscription_is_allowed_only_within_a_granted_prefix(
    secure_busd: BusdProcess,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    allowed: bool,
) -> None:
    """auditor is granted release.eu.: a subscription must start with it, so "" and "r"
    (which would deliver more than release.eu.) are never applied."""
    for key, value in keys.env("auditor").items():
        monkeypatch.setenv(key, value)
    before = _forbidden_subscriptions(secure_busd)
    canary = Subscriber(secure_busd.sub_endpoint, ["release.eu."])
    probe = Subscriber(secure_busd.sub_endpoint, [prefix])
    for key, value in keys.env("deployer").items():
        monkeypatch.setenv(key, value)
    try:
        with _publisher(secure_busd, "deployer") as pub:

            def canary_hears() -> bool:
                pub.publish_wait("release.eu.x", "release", 2, DATA)
                return canary.recv(timeout=0.2) is not None

            wait_for(canary_hears, timeout=15, what="the canary receiving")
            if not allowed:
                wait_for(
                    lambda: _forbidden_subscriptions(secure_busd) > before,
                    timeout=10,
                    what="busd refusing the probe's subscription",
                )
                for _ in range(20):
                    pub.publish("release.eu.x", "release", 2, DATA)
                assert pub.flush(5) == []
                got = 0
                while got < 20 and canary.recv(timeout=2) is not None:
                    got += 1
                assert got == 20
                assert probe.recv(timeout=0.1) is None
            else:
                wait_for(canary_hears, timeout=5)
                assert wait_for(lambda: probe.recv(timeout=0.2) is not None, timeout=10)
    finally:
        canary.close()
        probe.close()


def test_a_subscription_denial_shows_in_acl_show(
    secure_busd: BusdProcess, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in keys.env("reader").items():
        monkeypatch.setenv(key, value)
    with Subscriber(secure_busd.sub_endpoint, ["orders."]):
        wait_for(lambda: _forbidden_subscriptions(secure_busd) > 0, timeout=10, what="denial")
    with ControlClient(secure_busd.control) as control:
        denials = control.call("acl.show")["recent_denials"]
    assert {"identity": "reader", "what": "subscribe", "topic": "orders."}.items() <= denials[
        -1
    ].items()
