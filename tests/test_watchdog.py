"""The request watchdog: one timer that enforces the deadline and catches an engine that goes silent."""

from __future__ import annotations

import asyncio

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


async def test_a_request_within_both_limits_is_left_alone() -> None:
    said, _ = await _guarded(deadline_s=2.0, stall_s=0.3, wait_s=0.05, ticks=10, tick_s=0.05)
    assert said is None


async def test_the_deadline_cancels_a_request_that_keeps_producing() -> None:
    said, at = await _guarded(deadline_s=0.5, stall_s=0.3, wait_s=0.0, ticks=100, tick_s=0.05)
    assert said == "deadline" and 0.45 <= at < 0.9


async def test_waiting_longer_than_the_stall_limit_is_not_a_stall() -> None:
    said, _ = await _guarded(deadline_s=3.0, stall_s=0.2, wait_s=0.5, ticks=3, tick_s=0.05)
    assert said is None


async def test_an_engine_that_starts_late_and_goes_silent_is_caught_in_time() -> None:
    # the timer was re-armed while the request waited; the silence after the start still counts
    said, at = await _guarded(deadline_s=5.0, stall_s=0.2, wait_s=0.3, ticks=1, tick_s=2.0)
    assert said == "stall" and 0.45 <= at < 1.0
