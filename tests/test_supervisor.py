"""The supervisor restarts crashed peripheral tasks and gives up past its budget."""

from __future__ import annotations

import asyncio

import pytest

from busd.supervision.supervisor import GaveUp, Supervisor


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


@pytest.mark.timeout(10)
async def test_past_the_restart_budget_the_supervisor_gives_up() -> None:
    async def always() -> None:
        raise RuntimeError("persistent")

    sup = Supervisor(budget=2, window=60, backoff_initial=0.001)
    sup.add("always", always)
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(sup.run(), 5)
    assert info.group_contains(GaveUp)


@pytest.mark.timeout(10)
async def test_a_critical_task_that_ends_ends_the_supervisor_and_cancels_the_others() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    async def critical() -> None:
        await asyncio.sleep(0.01)

    sup = Supervisor()
    sup.add("forever", forever)
    sup.add("critical", critical, critical=True)
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(sup.run(), 5)
    assert info.group_contains(GaveUp)
    assert cancelled.is_set()
