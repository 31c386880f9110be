"""The Ruby client (clients/ruby) against real busd processes: its minitest suites, the
scenarios that need a busd of their own (warming up, a retired version, draining), and its
rate-file grammar checked case for case against busd's."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import rubyproc
from conftest import BusdProcess

from busd_client.keys import new_key_pair
from busd_protocol.rates import parse_rate

_MISSING = rubyproc.missing()
pytestmark = pytest.mark.skipif(
    _MISSING is not None, reason=f"Ruby client tests skipped: {_MISSING}"
)


@pytest.mark.timeout(120)
def test_the_ruby_unit_suites_pass() -> None:
    """Wire format, replies, rate files, the limiter's directory semantics, the publisher's
    bookkeeping: pure Ruby, real files."""
    files = sorted(
        str(p.relative_to(rubyproc.RUBY_DIR)) for p in rubyproc.RUBY_DIR.glob("test/unit/*_test.rb")
    )
    assert rubyproc.minitest(files) >= 40


@pytest.mark.timeout(300)
def test_the_ruby_suites_pass_against_a_real_busd(busd: BusdProcess) -> None:
    """Publishing, subscribing, every rejection code, rate limits and the control socket,
    from Ruby, against one busd."""
    files = [f"test/busd/{name}_test.rb" for name in ("publisher", "codes", "rates", "control")]
    assert rubyproc.minitest(files, rubyproc.busd_env(busd)) >= 30


@pytest.mark.timeout(120)
def test_a_warming_busd_answers_ruby_not_ready(busd_factory: Callable[..., BusdProcess]) -> None:
    """Started with --warmup 30, busd refuses every publish with not_ready."""
    busd = busd_factory(extra_args=("--warmup", "30"))
    rubyproc.minitest(["test/busd/warmup_test.rb"], rubyproc.busd_env(busd))


@pytest.mark.timeout(120)
def test_a_retired_version_is_refused_to_ruby(busd_factory: Callable[..., BusdProcess]) -> None:
    """With release v1 retired in the schemas directory, busd answers retired_version."""
    busd = busd_factory(start=False)
    meta = busd.schemas_dir / "release" / "meta.json"
    doc = json.loads(meta.read_text())
    doc["versions"]["1"] = "retired"
    meta.write_text(json.dumps(doc))
    busd.start()
    rubyproc.minitest(["test/busd/retired_test.rb"], rubyproc.busd_env(busd))


@pytest.mark.timeout(120)
def test_messages_queued_when_busd_drains_are_answered_shutting_down(
    busd_factory: Callable[..., BusdProcess],
) -> None:
    """busd is stopped (SIGSTOP) while a Ruby publisher sends 5,000 messages, then told to
    shut down with --drain-timeout 0: what it has not judged by then is answered
    shutting_down, and every message ends accepted, refused or timed out, none silently."""
    busd = busd_factory(extra_args=("--drain-timeout", "0"))
    count = 5000
    # A deadline well past what sending 5,000 messages takes on a loaded machine (at 3 s all
    # of them once timed out before busd was let go); answers come soon after SIGCONT.
    spec = {"endpoint": busd.pub_endpoint, "count": count, "timeout": 15.0, "data": _RELEASE}
    with rubyproc.script(
        "drain", spec, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "connected"
            busd.signal(signal.SIGSTOP)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "sent"
            busd.signal(signal.SIGTERM)
            busd.signal(signal.SIGCONT)
            proc.stdin.write("flush\n")
            proc.stdin.flush()
            result = json.loads(proc.stdout.readline())
            assert proc.wait(30) == 0
        finally:
            busd.signal(signal.SIGCONT)
            if proc.poll() is None:
                proc.kill()
    assert busd.proc is not None and busd.proc.wait(15) == 0
    fates = result["fates"]
    assert set(fates) <= {"accepted", "Busd::Rejected:shutting_down", "Busd::PublishTimeout:true"}
    assert sum(fates.values()) == count
    assert fates.get("Busd::Rejected:shutting_down", 0) > 0, fates
    assert result["draining"] is True


@pytest.mark.timeout(120)
def test_with_authentication_on_a_ruby_client_uses_its_key(
    busd_factory: Callable[..., BusdProcess], tmp_path: Path
) -> None:
    """CURVE keys written by busdctl keys new: Ruby publishes and subscribes as its
    identity, is refused forbidden under another name or outside its grant, and without a
    key never gets through the handshake."""
    _, server_secret = new_key_pair(tmp_path / "server", "server")
    public, secret = new_key_pair(tmp_path / "clients", "ruby-svc")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / public.name).write_bytes(public.read_bytes())
    acl = tmp_path / "acl.toml"
    acl.write_text('[identities.ruby-svc]\npublish = ["release."]\nsubscribe = ["release."]\n')
    busd = busd_factory(
        extra_args=(
            "--curve-secret",
            str(server_secret),
            "--keys-dir",
            str(tmp_path / "keys"),
            "--acl",
            str(acl),
        )
    )
    env = {
        **rubyproc.busd_env(busd),
        "BUSD_TEST_KEY": str(secret),
        "BUSD_TEST_SERVER_KEY": str(tmp_path / "server" / "server.key"),
    }
    rubyproc.minitest(["test/busd/trust_test.rb"], env)


# Rate-file contents busd's grammar accepts or refuses, with the edge cases of docs/rates.md.
_RATE_FILES = [
    "500", "0.5", "1000 100", "0", "0\n", "5 \t", "2\t3\n", "007", "1000000000",
    "1000000000.0", "1000000001", "0 1", "5 0", "5 0.5", "nan", "inf", "-5", "+5",
    "1_000", "1e3", ".5", "5.", "\u0665", "5\r\n", "5\n\n", " 5", "5 5 5", "", "abc",
    "5\x00", "1" * 300, "0.000001", "3 3 ", "\n", "5\t\t7", "5,5",
]  # fmt: skip


@pytest.mark.timeout(60)
def test_the_ruby_rate_file_grammar_agrees_with_busds(tmp_path: Path) -> None:
    """Each content gives the same limit (or the same refusal) in Ruby as in busd."""
    assert rubyproc.RUBY is not None
    code = (
        'require "busd"; require "json"; '
        "out = JSON.parse($stdin.read).map { |c| l = Busd::Rates.parse(c); l&.to_a }; "
        "puts JSON.generate(out)"
    )
    done = subprocess.run(
        [rubyproc.RUBY, "-Ilib", "-e", code],
        cwd=rubyproc.RUBY_DIR,
        input=json.dumps(_RATE_FILES),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    ruby = json.loads(done.stdout)
    for content, got in zip(_RATE_FILES, ruby, strict=True):
        limit = parse_rate(content.encode())
        want = None if limit is None else [limit.rate, limit.burst]
        assert got == want, content


_RELEASE = {
    "slug": "https://apps.example/shop/releases/42",
    "cmd": "bin/web",
    "env": {"RACK_ENV": "production"},
    "flag": "extra_cpu",
}
