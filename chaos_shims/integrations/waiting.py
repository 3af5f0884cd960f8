"""Sleeping in asyncio to within a fraction of a millisecond, also for long delays.

Linux lets ``epoll_wait`` (asyncio's selector) wake up late by its timer slack: 0.1% of the
timeout for an ordinary thread (1 ms at 1 s, 5 ms at 5 s). An injected delay of seconds would
then miss its target by more than the injection error allowed (docs/PERFORMANCE.md). Sleeping
in two steps, a long one to just before the deadline and a short one whose slack is
microseconds, lands within the loop's own resolution; neither step blocks the loop.
"""

from __future__ import annotations

import asyncio

#: the kernel's slack for poll/select/epoll timeouts of an ordinary (nice 0) thread
TIMER_SLACK_RATIO = 0.001
#: what the short last step covers beyond the slack
LAST_STEP_S = 0.002


async def sleep_precisely(delay: float) -> None:
    """``await asyncio.sleep(delay)``, ending within about 0.3 ms of ``delay`` for any length."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay
    first = delay * (1.0 - TIMER_SLACK_RATIO) - LAST_STEP_S
    if first > 0:
        await asyncio.sleep(first)
    remaining = deadline - loop.time()
    if remaining > 0:
        await asyncio.sleep(remaining)
