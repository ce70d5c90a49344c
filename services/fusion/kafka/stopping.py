"""Stopping an aiokafka consumer while a broker is away."""

import asyncio

from aiokafka import AIOKafkaConsumer


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """`consumer.stop()`, without aiokafka's own cancellation: on closing, its fetcher cancels the
    fetches in flight and awaits them, so one waiting out its retry back-off (its broker is down)
    raises CancelledError out of `stop()` although nothing cancelled the caller. A real cancellation
    of the caller still propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
