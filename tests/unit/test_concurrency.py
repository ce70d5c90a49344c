"""fusion.concurrency.BoundedPool: at most `limit` tasks at once, backpressure, draining."""

import asyncio

from fusion.concurrency import BoundedPool


class Meter:
    """Counts how many jobs run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.max_running = 0
        self.finished = 0

    async def job(self, seconds: float) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1
        self.finished += 1


async def test_never_more_than_limit_at_once() -> None:
    pool = BoundedPool(3)
    meter = Meter()
    for _ in range(12):
        await pool.submit(meter.job(0.01))
        assert pool.in_flight <= 3
    assert await pool.drain(timeout_s=5.0) == 0
    assert meter.finished == 12
    assert meter.max_running == 3
    assert pool.in_flight == 0


async def test_submit_returns_once_started_without_waiting_for_the_work() -> None:
    pool = BoundedPool(2)
    gate = asyncio.Event()

    async def wait_for_gate() -> None:
        await gate.wait()

    await asyncio.wait_for(pool.submit(wait_for_gate()), timeout=1.0)
    assert pool.in_flight == 1
    gate.set()
    assert await pool.drain(timeout_s=1.0) == 0


async def test_submit_blocks_while_full_until_a_slot_frees() -> None:
    pool = BoundedPool(2)
    gates = [asyncio.Event() for _ in range(3)]
    started: list[int] = []

    async def work(index: int) -> None:
        started.append(index)
        await gates[index].wait()

    await pool.submit(work(0))
    await pool.submit(work(1))
    third = asyncio.create_task(pool.submit(work(2)))
    await asyncio.sleep(0.05)
    assert not third.done()
    assert pool.in_flight == 2
    assert started == [0, 1]

    gates[0].set()
    await asyncio.wait_for(third, timeout=1.0)
    await asyncio.sleep(0)
    assert started == [0, 1, 2]
    assert pool.in_flight == 2
    gates[1].set()
    gates[2].set()
    assert await pool.drain(timeout_s=1.0) == 0


async def test_a_failing_task_frees_its_slot() -> None:
    pool = BoundedPool(1)

    async def fail() -> None:
        raise RuntimeError("boom")

    await pool.submit(fail())
    meter = Meter()
    await asyncio.wait_for(pool.submit(meter.job(0)), timeout=1.0)
    assert await pool.drain(timeout_s=1.0) == 0
    assert meter.finished == 1


async def test_drain_waits_for_running_work() -> None:
    pool = BoundedPool(4)
    meter = Meter()
    for _ in range(4):
        await pool.submit(meter.job(0.05))
    assert await pool.drain(timeout_s=5.0) == 0
    assert meter.finished == 4


async def test_drain_cancels_leftovers_and_returns_their_count() -> None:
    pool = BoundedPool(4)
    meter = Meter()
    cancelled: list[int] = []

    async def forever(index: int) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(index)
            raise

    await pool.submit(meter.job(0.0))
    await pool.submit(forever(1))
    await pool.submit(forever(2))
    assert await pool.drain(timeout_s=0.1) == 2
    await asyncio.sleep(0.01)
    assert sorted(cancelled) == [1, 2]
    assert meter.finished == 1
    assert pool.in_flight == 0


async def test_drain_of_an_idle_pool_is_zero() -> None:
    assert await BoundedPool(1).drain(timeout_s=0.0) == 0
