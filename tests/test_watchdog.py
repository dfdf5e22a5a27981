"""The request watchdog: one timer that enforces the deadline and catches an engine that goes silent."""

from __future__ import annotations

import asyncio

import pytest

from wwwserve.agent.watchdog import Watchdog


async def _guarded(
    deadline_s: float, stall_s: float, wait_s: float, ticks: int, tick_s: float
) -> tuple[str | None, float]:
    """Run a request that waits `wait_s` for the engine, then gets `ticks` deltas `tick_s` apart;
    return what the watchdog said and when (seconds after the start)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcome: list[str | None] = []

    async def request() -> None:
        task = asyncio.current_task()
        assert task is not None
        dog = Watchdog(loop, task, start + deadline_s, stall_s)
        try:
            await asyncio.sleep(wait_s)  # a slot, a peer: no engine yet
            dog.engine_started()
            for _ in range(ticks):
                await asyncio.sleep(tick_s)
                dog.tick()
            dog.engine_stopped()
            outcome.append(None)
        except asyncio.CancelledError:
            outcome.append(dog.claim())
        finally:
            dog.close()

    await asyncio.wait_for(request(), 10)
    return outcome[0], loop.time() - start


# (deadline_s, stall_s, wait_s, ticks, tick_s) -> what the watchdog says, and within which seconds
CASES = {
    "within both limits: left alone": ((2.0, 0.3, 0.05, 10, 0.05), None, (0.0, 2.0)),
    "produces past the deadline: cancelled": ((0.5, 0.3, 0.0, 100, 0.05), "deadline", (0.45, 0.9)),
    "waits longer than the stall limit: not a stall": ((3.0, 0.2, 0.5, 3, 0.05), None, (0.0, 3.0)),
    # the timer was re-armed while the request waited; the silence after the start still counts
    "starts late, then silent: a stall, in time": ((5.0, 0.2, 0.3, 1, 2.0), "stall", (0.45, 1.0)),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_watchdog_says_what_happened_and_when(case: str) -> None:
    args, expected, (earliest, latest) = CASES[case]
    said, at = await _guarded(*args)
    assert said == expected and earliest <= at < latest, (said, at)
