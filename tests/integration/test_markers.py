"""A judge taking an answers partition over loads only the released markers written since its group's
committed offset (less the margin), however many were written before: not the whole markers topic.

Through `ReleasedMarkers.ensure`, as the judge calls it before it handles a partition, with a consumer
of a group of the test's own (so the session's judge is not disturbed)."""

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fusion.judge.output import ReleasedMarkers
from fusion.settings import Settings
from fusion_contracts import PanelAnswer, topics
from fusion_contracts.common import utc_now

pytestmark = [pytest.mark.kafka]

OLD_MARKERS = 50_000
NEW_MARKERS = 5
MARGIN_S = 2.0
"""Small, so the test need not wait the judge's default (300 s) for the old markers to be old."""
OTHERS = 1_000
"""Markers other tests' requests may have left on the partition meanwhile: far fewer than the old."""
ANSWERS_0 = TopicPartition(topics.ANSWERS, 0)


async def _write_markers(settings: Settings, request_ids: list[str]) -> None:
    """Markers on partition 0, in batches built here (one `send` each would take far longer)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = list(request_ids)
        while pending:
            batch = producer.create_batch()
            while pending and batch.append(key=topics.request_key(pending[-1]), value=b"", timestamp=None):
                pending.pop()
            batch.close()
            await (await producer.send_batch(batch, topics.RELEASED, partition=0))
    finally:
        await producer.stop()


async def _write_answer(settings: Settings) -> int:
    """A well-formed answer whose plan never comes (a session's judge, if one runs, holds it until it
    is stale and drops it); returns its offset."""
    answer = PanelAnswer(
        request_id=f"markers-test-{uuid.uuid4().hex}",
        member_index=0,
        model="fast",
        status="error",
        error="a stand-in for the oldest uncommitted answer",
        latency_ms=0,
        finished_at=utc_now(),
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        written = await producer.send_and_wait(
            topics.ANSWERS,
            answer.model_dump_json().encode(),
            key=topics.request_key(answer.request_id),
            partition=0,
        )
    finally:
        await producer.stop()
    offset: int = written.offset
    return offset


async def _take_over(settings: Settings, committed: int | str | None) -> set[str]:
    """What a judge whose group committed `committed` on answers partition 0 (None: nothing; "end":
    its end) loads on taking it over."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"markers-test-{uuid.uuid4().hex}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([ANSWERS_0])
        if committed == "end":
            committed = (await consumer.end_offsets([ANSWERS_0]))[ANSWERS_0]
        if isinstance(committed, int):
            await consumer.commit({ANSWERS_0: committed})
        adopted: list[dict[int, set[str]]] = []
        markers = ReleasedMarkers(settings, adopted.append)
        await markers.ensure(consumer, {0})
        await markers.ensure(consumer, {0})  # loaded already: not read again
    finally:
        await consumer.stop()
    assert len(adopted) == 1
    return adopted[0].get(0, set())


@pytest.mark.usefixtures("topics")  # the fixture's name would hide the module's
async def test_a_takeover_loads_only_the_markers_since_its_oldest_uncommitted_answer(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"judge_markers_margin_s": MARGIN_S})
    old = [uuid.uuid4().hex for _ in range(OLD_MARKERS)]
    new = [uuid.uuid4().hex for _ in range(NEW_MARKERS)]
    started = time.monotonic()
    await _write_markers(settings, old)
    print(f"\n{OLD_MARKERS:,} old markers written in {time.monotonic() - started:.1f} s")
    await asyncio.sleep(MARGIN_S + 1.5)  # the old markers are older than the margin now
    committed = await _write_answer(settings)  # the group's committed offset: read again from here
    await _write_markers(settings, new)

    started = time.monotonic()
    loaded = await _take_over(settings, committed)
    loaded_s = time.monotonic() - started
    everything = await _take_over(settings, None)
    at_end = await _take_over(settings, "end")
    print(
        f"markers loaded from the committed offset: {len(loaded):,} in {loaded_s:.2f} s;"
        f" with nothing committed: {len(everything):,}; committed at the end: {len(at_end):,}"
    )

    assert set(new) <= loaded
    assert not loaded & set(old)
    assert len(loaded) < NEW_MARKERS + OTHERS
    # A group with nothing committed reads the partition's answers from their start, so every marker
    # counts (the offsets-lost step of `make bench-markers` measures that at a million).
    assert set(old) | set(new) <= everything
    assert not at_end  # nothing to read again, no marker needed
