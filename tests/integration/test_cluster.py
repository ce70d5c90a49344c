"""The three-node KRaft cluster (infra/kafka-cluster.sh): topics on all three brokers, and producers
that ride out the death of a partition's leader or of their transaction coordinator.

The module starts its own cluster on 19192-19197 from fresh data, beside the session's single broker.
Run with -s to see the measured figures (start time, failover, how long producing stalled).
"""

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fusion.kafka.admin import TopicPlan, create_topic
from fusion.settings import Settings

from tests.support.cluster import (
    NODES,
    Cluster,
    PacedProducer,
    Partition,
    run_cluster,
    transaction_partition,
)

pytestmark = [pytest.mark.kafka]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    run_cluster("reset")
    began = time.monotonic()
    bootstrap = run_cluster("start").splitlines()[-1]
    started_in_s = time.monotonic() - began
    print(f"\ncluster: {bootstrap} started from fresh data in {started_in_s:.1f} s")
    try:
        yield Cluster(bootstrap, started_in_s)
    finally:
        run_cluster("stop")


def _settings(cluster: Cluster) -> Settings:
    return Settings(kafka_bootstrap=cluster.bootstrap, instance_id="tests-cluster")


def _all_in_sync(state: Partition) -> bool:
    return state.leader in NODES and state.isr == frozenset(NODES)


async def _replicated_topic(cluster: Cluster, name: str) -> Partition:
    """A new one-partition topic on all three brokers; returns its partition once all three are in sync."""
    assert await create_topic(_settings(cluster), TopicPlan(name, 1), replication=3) == "created"
    return await cluster.wait_for(name, 0, "all three replicas in sync", _all_in_sync)


async def _read_back(cluster: Cluster, topic: str, count: int, isolation: str) -> list[int]:
    """Every value on partition 0, as numbers: count of them, and any duplicates a short wait more shows."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=cluster.bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        values: list[int] = []
        deadline = time.monotonic() + 20
        while len(values) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(partition, timeout_ms=500)
            values.extend(int(record.value) for record in batches.get(partition, []))
        batches = await consumer.getmany(partition, timeout_ms=300)
        values.extend(int(record.value) for record in batches.get(partition, []))
        return values
    finally:
        await consumer.stop()


async def test_a_topic_with_replication_3_has_a_replica_on_every_broker_all_in_sync(cluster: Cluster) -> None:
    plan = TopicPlan("cluster-replicated", 3)

    assert await create_topic(_settings(cluster), plan, replication=3) == "created"

    for partition in range(plan.partitions):
        state = await cluster.wait_for(plan.name, partition, "all three replicas in sync", _all_in_sync)
        assert state.replicas == state.isr == frozenset(NODES)
    assert await create_topic(_settings(cluster), plan, replication=3) == "exists"


async def test_an_idempotent_producer_writes_every_number_once_in_order_while_the_leader_is_killed(
    cluster: Cluster,
) -> None:
    topic = "cluster-failover"
    began = time.monotonic()
    leader = (await _replicated_topic(cluster, topic)).leader
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=30_000
    )
    await producer.start()
    paced = PacedProducer(producer, topic)
    try:
        await paced.start()
        controller = await cluster.controller()
        killed_at = time.monotonic()
        await cluster.kill(leader)
        dead_at = time.monotonic()  # the script returns once the process is gone
        moved = await cluster.wait_for(topic, 0, "a new leader", lambda s: s.leader not in (leader, -1))
        moved_after_s = time.monotonic() - killed_at
        await asyncio.sleep(0.5)
        await cluster.restart(leader)
        await cluster.wait_for(topic, 0, "the restarted broker in sync", _all_in_sync)
        back_after_s = time.monotonic() - killed_at
        await asyncio.sleep(0.5)
        count = await paced.stop()
    finally:
        await paced.close()
        await producer.stop()
        await cluster.restart(leader)  # a no-op unless the test failed before its restart

    assert moved.isr == frozenset(NODES) - {leader}, "the killed broker left the ISR"
    assert await _read_back(cluster, topic, count, "read_uncommitted") == list(range(count))
    silence_s, after = paced.longest_silence()
    slowest_s, slowest = paced.slowest()
    flowing_after_s = paced.first_ack_of_sent_after(dead_at) - killed_at
    print(
        f"\nfailover: {count} messages; leader {leader} killed "
        f"({'also' if controller == leader else 'not'} the active controller), "
        f"{moved.leader} led {moved_after_s:.1f} s later, all three in sync after {back_after_s:.1f} s; "
        f"acks again {flowing_after_s:.2f} s after the kill, "
        f"no acknowledgement for {silence_s:.2f} s (until #{after}), "
        f"slowest message #{slowest} took {slowest_s:.2f} s; test {time.monotonic() - began:.1f} s"
    )
    assert flowing_after_s < 15, "the stall lasted far longer than a fencing (3 s) and an election"


async def test_an_idempotent_producer_writes_every_number_once_in_order_past_a_paused_leader(
    cluster: Cluster,
) -> None:
    """A paused (SIGSTOPped) leader holds its connections open: the producer's request to it only times
    out (request_timeout_ms) and is sent again to the new leader; the stale leader, resumed, must not
    add the request it still had queued."""
    topic = "cluster-paused"
    began = time.monotonic()
    leader = (await _replicated_topic(cluster, topic)).leader
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=5_000
    )
    await producer.start()
    paced = PacedProducer(producer, topic)
    try:
        await paced.start()
        controller = await cluster.controller()
        paused_at = time.monotonic()
        await cluster.pause(leader)
        stopped_at = time.monotonic()
        moved = await cluster.wait_for(topic, 0, "a new leader", lambda s: s.leader not in (leader, -1))
        moved_after_s = time.monotonic() - paused_at
        await paced.wait_acked_since(paused_at)
        await cluster.resume(leader)
        await cluster.wait_for(topic, 0, "the resumed broker in sync", _all_in_sync)
        await asyncio.sleep(0.5)
        count = await paced.stop()
    finally:
        await paced.close()
        await producer.stop()
        await cluster.resume(leader)  # a no-op unless the test failed before its resume

    assert await _read_back(cluster, topic, count, "read_uncommitted") == list(range(count))
    silence_s, after = paced.longest_silence()
    flowing_after_s = paced.first_ack_of_sent_after(stopped_at) - paused_at
    print(
        f"\npause: {count} messages; leader {leader} paused "
        f"({'also' if controller == leader else 'not'} the active controller), "
        f"{moved.leader} led {moved_after_s:.1f} s later, acks again {flowing_after_s:.2f} s after it, "
        f"no acknowledgement for {silence_s:.2f} s (until #{after}); test {time.monotonic() - began:.1f} s"
    )


async def test_a_transaction_commits_across_the_death_of_its_coordinator(cluster: Cluster) -> None:
    topic = "cluster-transactions"
    transactional_id = "cluster-test-transactions"
    began = time.monotonic()
    data_leader = (await _replicated_topic(cluster, topic)).leader
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, transactional_id=transactional_id)
    await producer.start()  # creates __transaction_state, on all three brokers
    state_partition = transaction_partition(transactional_id)
    coordinator = (
        await cluster.wait_for("__transaction_state", state_partition, "all in sync", _all_in_sync)
    ).leader
    controller = await cluster.controller()

    async def send(numbers: range) -> None:
        for number in numbers:
            await producer.send(topic, str(number).encode(), partition=0)

    try:
        async with producer.transaction():
            await send(range(100))
        async with producer.transaction():
            await send(range(100, 200))
            await producer.flush()  # written to the partition, not yet committed
            killed_at = time.monotonic()
            await cluster.kill(coordinator)
            await send(range(200, 300))
        committed_after_s = time.monotonic() - killed_at
        await cluster.restart(coordinator)
        async with producer.transaction():
            await send(range(300, 400))
    finally:
        await producer.stop()
        await cluster.restart(coordinator)  # a no-op unless the test failed before its restart

    assert await _read_back(cluster, topic, 400, "read_committed") == list(range(400))
    print(
        f"\ntransactions: coordinator {coordinator} (data leader {data_leader}, controller {controller}) "
        f"killed mid-transaction, the commit done {committed_after_s:.1f} s later; "
        f"test {time.monotonic() - began:.1f} s"
    )
