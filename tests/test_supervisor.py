"""The supervisor restarts crashed peripheral tasks with a backoff that a healthy run resets,
counts restarts (not crashes), and gives up past its budget."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from busd.supervision.supervisor import GaveUp, Supervisor, SupervisorStatistics


@pytest.mark.timeout(10)
async def test_a_crashed_task_is_restarted_with_backoff() -> None:
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("boom")
        done.set()

    sup = Supervisor(budget=5, window=60, backoff_initial=0.01)
    sup.add("flaky", flaky)
    await asyncio.wait_for(sup.run(), 5)
    assert done.is_set() and runs == 3
    assert sup.restarts_total["flaky"] == 2
    (task,) = sup.statistics().tasks
    assert (task.name, task.crashes, task.restarts, task.running) == ("flaky", 2, 2, False)
    assert task.last_error == "RuntimeError('boom')"


@pytest.mark.timeout(10)
async def test_past_the_restart_budget_the_supervisor_gives_up_and_counts_only_restarts() -> None:
    """Budget 2: the first run and two restarts crash; the third crash gives up and is a
    crash, not a restart."""
    runs = 0

    async def always() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("persistent")

    sup = Supervisor(budget=2, window=60, backoff_initial=0.001)
    sup.add("always", always)
    with pytest.raises(GaveUp, match="always crashed 3 times"):
        await asyncio.wait_for(sup.run(), 5)
    assert runs == 3
    (task,) = sup.statistics().tasks
    assert (task.crashes, task.restarts) == (3, 2)
    assert sup.statistics().restarts_total == 2


@pytest.mark.timeout(10)
async def test_giving_up_cancels_the_other_tasks() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    async def always() -> None:
        raise RuntimeError("persistent")

    sup = Supervisor(budget=0, backoff_initial=0.001)
    sup.add("forever", forever)
    sup.add("always", always)
    with pytest.raises(GaveUp):
        await asyncio.wait_for(sup.run(), 5)
    assert cancelled.is_set()


@pytest.mark.timeout(10)
async def test_the_backoff_doubles_on_quick_crashes_and_a_healthy_run_resets_it() -> None:
    """A run of at least ``healthy_after`` seconds (on the supervisor's clock) starts the
    backoff over at its initial value."""
    now = [0.0]
    backoffs: list[float] = []
    # How long each run lasts on the supervisor's clock: three quick ones, a healthy one.
    durations = iter([0.1, 0.1, 0.1, 30.0, 0.1])
    sup = Supervisor(
        budget=10, window=1000, backoff_initial=0.001, healthy_after=10.0, clock=lambda: now[0]
    )

    async def crashes() -> None:
        backoffs.append(sup.statistics().tasks[0].backoff)
        try:
            now[0] += next(durations)
        except StopIteration:
            return
        raise RuntimeError("crash")

    sup.add("crashes", crashes)
    await asyncio.wait_for(sup.run(), 5)
    # Backoff seen by each run: none yet, then 1, 2, 4 ms; the healthy run's crash resets
    # it to 1 ms; the quick crash after it doubles it again.
    assert backoffs == [0.0, 0.001, 0.002, 0.004, 0.001, 0.002]


def test_statistics_are_a_frozen_snapshot() -> None:
    sup = Supervisor()
    sup.add("a", asyncio.sleep)  # type: ignore[arg-type]
    stats = sup.statistics()
    assert isinstance(stats, SupervisorStatistics)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.tasks[0].restarts = 1  # type: ignore[misc]
    assert stats.tasks[0].running is False and stats.restarts_total == 0
