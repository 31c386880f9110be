"""The rates directory watcher on a real directory: values, errors, deletion, recreation."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from busd.control.rates_dir import Change, RatesDir
from busd_protocol.rates import Limit, Limits

pytestmark = pytest.mark.timeout(20)


def scanned(rates: RatesDir) -> dict[str, Limit]:
    rates.scan()
    return dict(rates.limits)


def errors(rates: RatesDir) -> dict[str, str]:
    return {e.name: e.kind for e in rates.errors()}


@pytest.fixture
def rates(tmp_path: Path) -> Iterator[RatesDir]:
    directory = tmp_path / "rates"
    rates = RatesDir(directory)
    rates.prepare()
    yield rates
    rates.close()


def test_a_file_sets_the_limit_of_the_key_it_is_named_after(rates: RatesDir) -> None:
    assert scanned(rates) == {}
    (rates.path / "publish").write_text("500\n")
    (rates.path / "publish.release").write_text("10 2\n")
    (rates.path / "publisher.deployer").write_text("0\n")
    assert scanned(rates) == {
        "publish": Limit(500, 500),
        "publish.release": Limit(10, 2),
        "publisher.deployer": Limit(0, 1),
    }
    assert errors(rates) == {}


def test_every_applied_change_is_logged_with_old_new_and_source(
    rates: RatesDir, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="busd.rates")
    (rates.path / "publish").write_text("500\n")
    assert rates.scan() == (Change("publish", None, Limit(500, 500), "file"),)
    (rates.path / "publish").write_text("0\n")
    assert rates.scan() == (Change("publish", Limit(500, 500), Limit(0, 1), "file"),)
    lines = [r for r in caplog.records if r.getMessage() == "rate limit changed"]
    assert [(r.key, r.old, r.new, r.source) for r in lines] == [  # type: ignore[attr-defined]
        ("publish", "unlimited", "500/s burst 500", "file"),
        ("publish", "500/s burst 500", "0/s burst 1", "file"),
    ]


def test_deleting_a_file_clears_the_limit(rates: RatesDir) -> None:
    (rates.path / "publish").write_text("5\n")
    assert scanned(rates) == {"publish": Limit(5, 5)}
    (rates.path / "publish").unlink()
    assert scanned(rates) == {}


@pytest.mark.parametrize(
    "content",
    [
        b"garbage\n",
        b"-5\n",
        b"nan\n",
        b"inf\n",
        b"1_000\n",
        "\u0665\n".encode(),
        b"1e3\n",
        b"5.\n",
        b"",
    ],
)
def test_bad_content_keeps_the_last_good_value_and_is_reported(
    rates: RatesDir, content: bytes
) -> None:
    (rates.path / "publish").write_bytes(b"100\n")
    assert scanned(rates) == {"publish": Limit(100, 100)}
    (rates.path / "publish").write_bytes(content)
    assert scanned(rates) == {"publish": Limit(100, 100)}
    assert errors(rates) == {"publish": "empty" if content == b"" else "content"}
    assert rates.statistics().errors_total == 1
    assert scanned(rates) == {"publish": Limit(100, 100)}
    assert rates.statistics().errors_total == 1  # seen again, not counted again
    (rates.path / "publish").write_bytes(b"7\n")
    assert scanned(rates) == {"publish": Limit(7, 7)}
    assert errors(rates) == {}


def test_a_half_written_file_keeps_the_last_good_value_until_the_write_lands(
    rates: RatesDir,
) -> None:
    path = rates.path / "publish"
    path.write_text("100\n")
    rates.scan()
    with path.open("wb") as f:  # what `echo 500 > publish` does: truncate, then write
        assert scanned(rates) == {"publish": Limit(100, 100)}
        assert errors(rates) == {"publish": "empty"}
        f.write(b"5")
        f.flush()
        assert scanned(rates) == {"publish": Limit(5, 5)}
        f.write(b"00\n")
    assert scanned(rates) == {"publish": Limit(500, 500)}
    assert errors(rates) == {}


def test_a_same_size_rewrite_in_the_same_clock_tick_is_seen(rates: RatesDir) -> None:
    path = rates.path / "publish"
    path.write_text("5\n")
    rates.scan()
    path.write_text("6\n")  # same inode, same size, likely the same mtime
    assert scanned(rates) == {"publish": Limit(6, 6)}


def test_a_directory_in_place_of_the_file_is_unreadable_and_keeps_the_value(
    rates: RatesDir,
) -> None:
    path = rates.path / "publish"
    path.write_text("100\n")
    rates.scan()
    path.unlink()
    path.mkdir()
    assert scanned(rates) == {"publish": Limit(100, 100)}
    assert errors(rates) == {"publish": "not_a_file"}


def test_a_fifo_in_place_of_the_file_does_not_hang_the_reader(rates: RatesDir) -> None:
    path = rates.path / "publish"
    path.write_text("100\n")
    rates.scan()
    path.unlink()
    os.mkfifo(path)
    assert scanned(rates) == {"publish": Limit(100, 100)}
    assert errors(rates) == {"publish": "not_a_file"}


def _scan_as_nobody(directory: Path) -> dict[str, object]:
    """Mode 000 only stops a non-root reader: fork, drop to uid 65534, and scan for real."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            rates = RatesDir(directory)
            (directory / "publish").write_text("100\n")
            rates.scan()
            os.chmod(directory / "publish", 0)
            rates.scan()
            result = {
                "limits": {k: [v.rate, v.burst] for k, v in rates.limits.items()},
                "errors": {e.name: [e.kind, e.message] for e in rates.errors()},
            }
            os.write(write_fd, json.dumps(result).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        out = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_mode_000_file_is_unreadable_and_keeps_the_last_good_value() -> None:
    directory = Path(tempfile.mkdtemp(prefix="busd-rates-"))
    try:
        if os.geteuid() == 0:
            os.chown(directory, 65534, 65534)
            result = _scan_as_nobody(directory)
        else:
            rates = RatesDir(directory)
            (directory / "publish").write_text("100\n")
            rates.scan()
            os.chmod(directory / "publish", 0)
            rates.scan()
            result = {
                "limits": {k: [v.rate, v.burst] for k, v in rates.limits.items()},
                "errors": {e.name: [e.kind, e.message] for e in rates.errors()},
            }
    finally:
        shutil.rmtree(directory)
    assert result["limits"] == {"publish": [100.0, 100.0]}
    errs = result["errors"]
    assert isinstance(errs, dict)
    assert errs["publish"][0] == "unreadable"
    assert "Permission denied" in errs["publish"][1]


def test_a_deleted_directory_keeps_every_value_and_is_reported(rates: RatesDir) -> None:
    (rates.path / "publish").write_text("100\n")
    rates.scan()
    shutil.rmtree(rates.path)
    assert scanned(rates) == {"publish": Limit(100, 100)}
    assert errors(rates) == {"": "directory"}


def test_a_recreated_directory_applies_its_files_and_keeps_orphans_reported(
    rates: RatesDir,
) -> None:
    (rates.path / "publish").write_text("100\n")
    (rates.path / "publish.a").write_text("3\n")
    rates.scan()
    shutil.rmtree(rates.path)
    rates.scan()
    rates.path.mkdir()
    (rates.path / "publish.a").write_text("4\n")
    assert scanned(rates) == {"publish": Limit(100, 100), "publish.a": Limit(4, 4)}
    assert errors(rates) == {"publish": "orphan"}
    (rates.path / "publish").write_text("50\n")
    assert scanned(rates) == {"publish": Limit(50, 50), "publish.a": Limit(4, 4)}
    assert errors(rates) == {}


async def test_clear_drops_an_orphan_kept_after_recreation(rates: RatesDir) -> None:
    (rates.path / "publish").write_text("100\n")
    await rates.refresh()
    shutil.rmtree(rates.path)
    rates.path.mkdir()
    await rates.refresh()
    assert dict(rates.limits) == {"publish": Limit(100, 100)}
    assert await rates.clear("publish") is True
    assert dict(rates.limits) == {}
    assert errors(rates) == {}


def test_editor_and_temp_files_are_ignored_and_other_names_reported(rates: RatesDir) -> None:
    for name in (
        ".#publish",
        "publish~",
        ".publish.swp",
        "#publish#",
        "publish.tmp",
        ".busd-1-ab.busd.tmp",
    ):
        (rates.path / name).write_text("0\n")
    (rates.path / "foo").write_text("5\n")
    assert scanned(rates) == {}
    assert errors(rates) == {"foo": "name"}
    (rates.path / "foo").unlink()
    rates.scan()
    assert errors(rates) == {}


def test_prepare_removes_only_stale_temp_files_of_ours(rates: RatesDir) -> None:
    stale = rates.path / ".busd-1-aa.busd.tmp"
    fresh = rates.path / ".busd-2-bb.busd.tmp"
    stale.write_text("1\n")
    fresh.write_text("1\n")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    rates.prepare()
    assert not stale.exists()
    assert fresh.exists()


async def test_set_writes_the_file_atomically_and_applies_it_as_socket(rates: RatesDir) -> None:
    seen: list[tuple[Limits, tuple[Change, ...]]] = []
    rates = RatesDir(rates.path, lambda limits, changes: seen.append((limits, changes)))
    assert await rates.set("publish.release", 250, 10) == Limit(250, 10)
    assert (rates.path / "publish.release").read_text() == "250 10\n"
    assert [p.name for p in rates.path.iterdir()] == ["publish.release"]  # no temp left
    assert seen == [
        (
            {"publish.release": Limit(250, 10)},
            (Change("publish.release", None, Limit(250, 10), "socket"),),
        )
    ]
    assert await rates.clear("publish.release") is True
    assert not (rates.path / "publish.release").exists()
    assert seen[-1][1] == (Change("publish.release", Limit(250, 10), None, "socket"),)
    assert await rates.clear("publish.release") is False


async def test_set_refuses_bad_keys_and_values_without_writing(rates: RatesDir) -> None:
    for key, rate in (("other", 5), ("publish/x", 5), ("publish", -1), ("publish", "1e3")):
        with pytest.raises(ValueError, match=r"key|rate|prefix"):
            await rates.set(key, rate)
    assert list(rates.path.iterdir()) == []


@pytest.mark.timeout(10)
async def test_an_echo_into_the_directory_applies_within_one_second(rates: RatesDir) -> None:
    installed: list[Limits] = []
    rates = RatesDir(rates.path, lambda limits, _: installed.append(limits))
    await rates.start()
    task = asyncio.create_task(rates.run())
    try:
        for value, expected in (("0", Limit(0, 1)), ("500", Limit(500, 500))):
            started = time.monotonic()
            echo = await asyncio.create_subprocess_exec(
                "sh", "-c", f"echo {value} > '{rates.path}/publish'"
            )
            assert await echo.wait() == 0
            while not installed or installed[-1].get("publish") != expected:
                assert time.monotonic() - started < 1.0, "change not applied within 1 s"
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_dangling_symlink_is_unreadable_and_keeps_the_value(rates: RatesDir) -> None:
    path = rates.path / "publish"
    path.write_text("100\n")
    rates.scan()
    path.unlink()
    path.symlink_to(rates.path / "nowhere")
    assert scanned(rates) == {"publish": Limit(100, 100)}
    assert errors(rates) == {"publish": "unreadable"}


async def test_a_change_refused_by_on_change_is_delivered_at_the_next_refresh(
    rates: RatesDir,
) -> None:
    delivered: list[tuple[Change, ...]] = []
    failing = [True]

    def install(limits: Limits, changes: tuple[Change, ...]) -> None:
        if failing[0]:
            raise RuntimeError("installer bug")
        delivered.append(changes)

    rates = RatesDir(rates.path, install)
    (rates.path / "publish").write_text("5\n")
    with pytest.raises(RuntimeError, match="installer bug"):
        await rates.refresh()  # what ends the task for its supervisor to restart
    failing[0] = False
    assert await rates.refresh() == ()  # nothing new on disk, but the pending change goes out
    assert delivered == [(Change("publish", None, Limit(5, 5), "file"),)]
    rates.close()
