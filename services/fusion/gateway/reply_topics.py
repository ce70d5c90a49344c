"""Reply topics of gateways that are gone, found by age and deleted by any gateway.

A live gateway writes a `GatewayPresence` to its own reply topic when it connects and then every
`presence_interval(stale_s)` seconds (`fusion.gateway.link`), so its topic always has a message newer
than `stale_s`. A reply topic without one belongs to a gateway that has been gone at least that long;
with `stale_s` above the longest deadline (900 s), no result of its requests can still be due either.
Such a topic is deleted by whichever gateway sweeps first: at connect, then every `sweep_interval`.

What the sweep decides from, per topic: the broker's `ListOffsets` (the first offset at or after a
timestamp: none means no message is that recent), so it reads no message. Reply topics are created
with broker timestamps (`LogAppendTime`), so the gateways' own clocks do not matter, only the sweeping
host's against the brokers'. A topic with no message at all (a gateway killed while it connected, or
one that predates presence messages and whose messages expired) cannot be dated: it is deleted once the
same sweeper has seen it empty for `stale_s`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from fusion_contracts import topics

from fusion.kafka.security import KafkaConnection, connection
from fusion.kafka.stopping import stop_consumer

log = structlog.get_logger(__name__)

Age = Literal["fresh", "stale", "empty", "gone"]

PRESENCE_S = 60.0
SWEEP_S = 600.0


def presence_interval(stale_s: float) -> float:
    """How often a gateway writes its presence: well within `stale_s`, so one lost write is harmless."""
    return min(PRESENCE_S, stale_s / 4)


def sweep_interval(stale_s: float) -> float:
    return min(SWEEP_S, stale_s / 2)


async def reply_topics(admin: AIOKafkaAdminClient) -> list[str]:
    return sorted(name for name in await admin.list_topics() if name.startswith(topics.REPLIES_PREFIX))


async def ages(
    consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, names: list[str], stale_s: float, now_s: float
) -> dict[str, Age]:
    """For each topic: `fresh` (a message newer than `stale_s`), `stale`, `empty` or `gone`."""
    described = {entry["topic"]: entry for entry in await admin.describe_topics(names)}
    partitions: dict[str, list[TopicPartition]] = {}
    found: dict[str, Age] = {}
    for name in names:
        entry = described.get(name)
        if entry is None or entry["error_code"] != 0 or not entry["partitions"]:
            found[name] = "gone"
        else:
            partitions[name] = [TopicPartition(name, p["partition"]) for p in entry["partitions"]]
    every = [tp for tps in partitions.values() for tp in tps]
    if not every:
        return found
    starts = await consumer.beginning_offsets(every)
    ends = await consumer.end_offsets(every)
    cutoff_ms = int((now_s - stale_s) * 1000)
    newer = await consumer.offsets_for_times({tp: cutoff_ms for tp in every})
    for name, tps in partitions.items():
        if all(ends[tp] <= starts[tp] for tp in tps):
            found[name] = "empty"
        elif any(newer.get(tp) is not None for tp in tps):
            found[name] = "fresh"
        else:
            found[name] = "stale"
    return found


@dataclass
class Sweeper:
    """Deletes the reply topics of gone gateways, never `own` (the caller's). Keeps, between sweeps,
    when it first saw each empty topic empty."""

    kafka: str | KafkaConnection
    own: str
    stale_s: float
    clock: Callable[[], float] = time.time
    empty_since: dict[str, float] = field(default_factory=dict)

    async def sweep(self) -> list[str]:
        """Deletes what is stale now; returns the deleted topics' names."""
        kafka = connection(self.kafka).client_args()
        admin = AIOKafkaAdminClient(**kafka, request_timeout_ms=15_000)
        consumer = AIOKafkaConsumer(**kafka, group_id=None, enable_auto_commit=False)
        await admin.start()
        try:
            await consumer.start()
            try:
                return await self._sweep(admin, consumer)
            finally:
                await stop_consumer(consumer)
        finally:
            await admin.close()

    async def _sweep(self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> list[str]:
        names = [name for name in await reply_topics(admin) if name != self.own]
        now = self.clock()
        found = await ages(consumer, admin, names, self.stale_s, now) if names else {}
        for name in [n for n in self.empty_since if found.get(n) != "empty"]:
            del self.empty_since[name]  # written to since, or deleted: bounded by the topics there are
        doomed = []
        for name, age in found.items():
            if age == "empty":
                since = self.empty_since.setdefault(name, now)
                if now - since >= self.stale_s:
                    doomed.append(name)
            elif age == "stale":
                doomed.append(name)
        if not doomed:
            return []
        # Dated again just before deleting: a gateway that restarted under the same instance id
        # meanwhile has written its presence, and keeps its topic.
        again = await ages(consumer, admin, doomed, self.stale_s, self.clock())
        doomed = [name for name in doomed if again.get(name) in ("stale", "empty")]
        deleted = []
        for name in doomed:
            try:
                response = await admin.delete_topics([name])
            except KafkaError as error:
                log.warning("could not delete a stale reply topic", topic=name, error=str(error))
                continue
            codes = [code for _, code, *_ in response.topic_error_codes]
            if all(code == 0 for code in codes):
                deleted.append(name)
                self.empty_since.pop(name, None)
                log.info("stale reply topic deleted", topic=name, stale_s=self.stale_s, age=found[name])
            else:  # another gateway deleted it first (unknown topic), or the broker refused
                log.info("stale reply topic not deleted", topic=name, error_codes=codes)
        return deleted
