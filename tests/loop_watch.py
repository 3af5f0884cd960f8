"""Watch the event loop while something is awaited: did a sibling task keep running?"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def watched(awaitable: Awaitable[T], period: float = 0.005) -> tuple[T, float, int]:
    """Await ``awaitable``; return its result, the seconds it took and how many times a sibling
    task woke up every ``period`` seconds meanwhile (a blocked loop gives about zero)."""
    ticks = 0

    async def sibling() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(period)
            ticks += 1

    task = asyncio.create_task(sibling())
    started = time.perf_counter()
    try:
        result = await awaitable
    finally:
        elapsed = time.perf_counter() - started
        task.cancel()
    return result, elapsed, ticks
