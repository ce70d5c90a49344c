"""Which partitions of a topic this process holds, told to a service as its group rebalances."""

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener

OnPartitions = Callable[[set[int]], Awaitable[None]]


class AssignmentListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """A consumer's rebalance listener (aiokafka's public hook, given to FastStream's subscriber) that
    hands the service the partition numbers of `topic` revoked from it and assigned to it. aiokafka
    waits for each before the rebalance goes on, so a service finishes with a partition before its
    new owner starts."""

    def __init__(self, topic: str, revoked: OnPartitions, assigned: OnPartitions) -> None:
        self._topic = topic
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._revoked({tp.partition for tp in revoked if tp.topic == self._topic})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._assigned({tp.partition for tp in assigned if tp.topic == self._topic})
