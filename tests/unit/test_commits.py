"""Offsets of out-of-order work: committed in the background, coalesced, never past unfinished work."""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from fusion.kafka.commits import OffsetCommitter

TP = TopicPartition("fusion.tasks", 3)


class RecordingConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """An AIOKafkaConsumer that records its commits instead of sending them."""

    commits: list[dict[TopicPartition, int]]

    async def commit(self, offsets: Any = None) -> None:
        self.commits.append(dict(offsets))


def a_consumer() -> RecordingConsumer:
    consumer = object.__new__(RecordingConsumer)  # no broker behind it
    consumer.commits = []
    return consumer


def a_record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return cast(ConsumerRecord, SimpleNamespace(topic=TP.topic, partition=TP.partition, offset=offset))


async def test_an_offset_waits_for_every_earlier_message() -> None:
    consumer = a_consumer()
    committer = OffsetCommitter(interval_s=0.0)
    done = [committer.started(a_record(offset), consumer) for offset in (10, 11, 12)]
    done[1]()
    done[2]()
    await asyncio.sleep(0.01)
    assert all(commit[TP] <= 10 for commit in consumer.commits)  # 10 is still running: read it again
    done[0]()
    await committer.flush()
    assert consumer.commits[-1] == {TP: 13}


async def test_commits_are_coalesced_and_the_last_one_is_the_newest() -> None:
    consumer = a_consumer()
    committer = OffsetCommitter(interval_s=0.05)
    for offset in range(100):
        committer.started(a_record(offset), consumer)()
    await committer.flush()
    assert 1 <= len(consumer.commits) <= 2  # one per interval, not one per message
    assert consumer.commits[-1] == {TP: 100}


async def test_nothing_is_committed_for_the_in_memory_test_broker() -> None:
    committer = OffsetCommitter(interval_s=0.0)
    committer.started(a_record(0), object())()
    await committer.flush()
    assert committer.in_flight == 0
