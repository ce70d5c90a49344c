"""fusion.kafka.stopping: aiokafka's own cancellation on stop is not taken for the caller's."""

import asyncio
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer
from fusion.kafka.stopping import stop_consumer


class CancelsOnStop:
    """What aiokafka's consumer does when a fetch to a dead broker is in its back-off as it stops."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def stop(self) -> None:
        fetch = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        fetch.cancel()
        self.stopped.set()
        await fetch  # raises CancelledError, as the fetcher's close does


def consumer(fake: Any) -> AIOKafkaConsumer:
    return cast(AIOKafkaConsumer, fake)


async def test_a_cancellation_from_inside_stop_does_not_escape() -> None:
    fake = CancelsOnStop()
    with pytest.raises(asyncio.CancelledError):
        await fake.stop()  # without the helper, the caller sees a cancellation it never asked for
    await stop_consumer(consumer(CancelsOnStop()))


async def test_a_real_cancellation_of_the_caller_still_propagates() -> None:
    fake = CancelsOnStop()

    async def stop_then_wait() -> None:
        await stop_consumer(consumer(fake))
        await asyncio.sleep(10)

    task = asyncio.create_task(stop_then_wait())
    await fake.stopped.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
