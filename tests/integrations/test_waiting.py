"""sleep_precisely: never early, never blocking, in two steps for long delays."""

from __future__ import annotations

import asyncio

import pytest

from chaos_shims.integrations import waiting
from chaos_shims.integrations.waiting import sleep_precisely

pytestmark = pytest.mark.timeout(30)


@pytest.mark.asyncio
@pytest.mark.parametrize("delay", [0.0, 0.001, 0.05, 0.3])
async def test_never_wakes_before_the_delay(delay: float) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sleep_precisely(delay)
    assert loop.time() - started >= delay


@pytest.mark.asyncio
async def test_a_long_delay_ends_with_a_short_step(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds: float) -> None:
        steps.append(seconds)
        await real_sleep(seconds)

    monkeypatch.setattr(waiting.asyncio, "sleep", recording_sleep)
    await sleep_precisely(0.5)
    # the first step stops short by the kernel's slack on it and the last step's margin
    assert steps[0] == pytest.approx(0.5 * (1 - waiting.TIMER_SLACK_RATIO) - waiting.LAST_STEP_S)
    # then what is left to the deadline, if anything (a busy machine may oversleep the first)
    assert len(steps) <= 2 and all(0 < step < 0.5 - steps[0] + 0.05 for step in steps[1:])


@pytest.mark.asyncio
async def test_sibling_tasks_run_during_the_sleep() -> None:
    ran = 0

    async def sibling() -> None:
        nonlocal ran
        while True:
            ran += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(sibling())
    await sleep_precisely(0.2)
    task.cancel()
    assert ran >= 10
