"""The three-node Kafka cluster of infra/kafka-cluster.sh, for the failover tests: the cluster itself
is in fusion_testing.cluster (the chaos run uses it too); the producers and hashes here are the tests'.
"""

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from fusion_testing.cluster import (
    CLUSTER_PORT,
    NODES,
    SCRIPT,
    Cluster,
    Partition,
    broker_address,
    run_cluster,
)

__all__ = [  # the cluster's own names, which the failover tests import from here
    "CLUSTER_PORT",
    "NODES",
    "SCRIPT",
    "Cluster",
    "PacedProducer",
    "Partition",
    "broker_address",
    "java_string_hash",
    "run_cluster",
    "transaction_partition",
]


@dataclass
class PacedProducer:
    """Sends 0, 1, 2, ... to partition 0 of a topic, one every pace_s, and notes when each was sent
    and acknowledged: while the partition has no leader, the acknowledgements stop."""

    producer: AIOKafkaProducer
    topic: str
    pace_s: float = 0.005
    sent_at: list[float] = field(default_factory=list)
    acked_at: dict[int, float] = field(default_factory=dict)
    deliveries: list["asyncio.Future[Any]"] = field(default_factory=list)
    _task: "asyncio.Task[None] | None" = None
    _running: bool = False

    async def start(self, steady_s: float = 1.0) -> None:
        """Starts sending; returns once steady_s of sending has gone by and the messages sent since
        are being acknowledged (a new producer's first sends can take a while)."""
        began = time.monotonic()
        self._running = True
        self._task = asyncio.create_task(self._produce())
        await asyncio.sleep(steady_s)
        await self.wait_acked_since(began + steady_s / 2)

    async def stop(self, timeout_s: float = 30) -> int:
        """Stops sending, waits for every acknowledgement (any failed send raises) and returns the count."""
        self._running = False
        if self._task is not None:
            await self._task
        await asyncio.wait_for(asyncio.gather(*self.deliveries), timeout=timeout_s)
        return len(self.deliveries)

    async def close(self) -> None:
        """Stops sending without waiting for acknowledgements (after a failure)."""
        self._running = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _produce(self) -> None:
        for number in itertools.count():
            if not self._running:
                return
            self.sent_at.append(time.monotonic())
            delivery = await self.producer.send(self.topic, str(number).encode(), partition=0)
            delivery.add_done_callback(lambda _, n=number: self._acked(n))
            self.deliveries.append(delivery)
            await asyncio.sleep(self.pace_s)

    def _acked(self, number: int) -> None:
        self.acked_at[number] = time.monotonic()

    async def wait_acked_since(self, moment: float, timeout_s: float = 30) -> None:
        """Waits until a message sent after moment (a time.monotonic()) is acknowledged."""
        deadline = time.monotonic() + timeout_s
        while not any(self.sent_at[n] > moment for n in self.acked_at):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing sent since then acknowledged after {timeout_s} s")
            await asyncio.sleep(0.05)

    def first_ack_of_sent_after(self, moment: float) -> float:
        """When (time.monotonic()) the first message sent after moment was acknowledged."""
        return min(self.acked_at[n] for n, sent in enumerate(self.sent_at) if sent > moment)

    def longest_silence(self) -> tuple[float, int]:
        """The longest time between two acknowledgements, and the number acknowledged after it."""
        times = [self.acked_at[n] for n in range(len(self.deliveries))]
        return max((later - earlier, n) for n, (earlier, later) in enumerate(itertools.pairwise(times), 1))

    def slowest(self) -> tuple[float, int]:
        """The longest time from a send to its acknowledgement, and that message's number."""
        return max((self.acked_at[n] - sent, n) for n, sent in enumerate(self.sent_at))


def java_string_hash(text: str) -> int:
    """Java's String.hashCode, with which Kafka places a transactional id on a partition."""
    value = 0
    for unit in text.encode("utf-16-be").hex(" ", 2).split():
        value = (31 * value + int(unit, 16)) & 0xFFFFFFFF
    return value


def transaction_partition(transactional_id: str, partitions: int = 4) -> int:
    """The __transaction_state partition whose leader coordinates the transactional id's transactions
    (partitions is the cluster's transaction.state.log.num.partitions)."""
    return (java_string_hash(transactional_id) & 0x7FFFFFFF) % partitions
