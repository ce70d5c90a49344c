"""A process that speaks schema 1.1 (tests/support/contracts_v1_1.py), for the rolling-upgrade test
(tests/integration/test_rolling_upgrade.py), while the services it talks to speak 1.0.

`python -m tests.support.upgraded_client <bootstrap> <run id>` publishes, as a newer release would:

- `<run>-request`: a 1.1 request, to the 1.0 dispatcher;
- `<run>-dispatch`: a 1.1 plan and task, as a 1.1 dispatcher would write them, to the 1.0 panel
  worker and judge;
- `<run>-result`: a 1.1 result, as a 1.1 judge would write it, to the 1.0 clients of fusion.results;
- `<run>-v2`, `<run>-v2-task`, `<run>-v2-plan`: a request, a task and a plan of major 2.

It reads the results of the first two with its own 1.1 contract (a 1.0 writer's message, read by a
1.1 reader) and prints them as one line of JSON: `{"request": {...}, "dispatch": {...}}`.
"""

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from fusion.kafka.codec import DecodeError, decode, encode
from fusion.kafka.tap import TopicTap
from fusion_contracts import ChatMessage, ModelSpec, Timings, limits, topics
from pydantic import TypeAdapter

from tests.support.contracts_v1_1 import (
    FusedResultV11,
    FusionRequestV11,
    JudgeOutcomeV11,
    ModelSpecV11,
    PanelPlanV11,
    PanelTaskV11,
    PolicyV11,
    v2,
)

RESULT_V11: TypeAdapter[FusedResultV11] = TypeAdapter(FusedResultV11)
WAIT_S = 60.0


def messages(run: str) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of everything this process publishes."""
    now = datetime.now(UTC)
    question = [ChatMessage(role="user", content="Does a newer minor get through?")]
    judge = ModelSpecV11(model="fast", provider_hint="eu")
    request = FusionRequestV11(
        request_id=f"{run}-request",
        messages=question,
        preset="standin",
        judge=judge,
        policy=PolicyV11(deadline_s=60, grace_s=1, priority=7),
        tags=["upgrade"],
    )
    dispatch = f"{run}-dispatch"
    plan = PanelPlanV11(
        request_id=dispatch,
        messages=question,
        members=[ModelSpec(model="fast")],
        judge=judge,
        quorum=1,
        grace_s=0.0,
        panel_deadline_at=now + timedelta(seconds=40),
        deadline_at=now + timedelta(seconds=60),
        submitted_at=now,
        dispatched_at=now,
        priority=7,
    )
    task = PanelTaskV11(
        request_id=dispatch,
        member_index=0,
        member=ModelSpecV11(model="fast", provider_hint="eu"),
        messages=question,
        deadline_at=now + timedelta(seconds=40),
        dispatched_at=now,
        attempt=1,
    )
    result = FusedResultV11(
        request_id=f"{run}-result",
        status="complete",
        answer="written by a 1.1 judge",
        answer_source="judge",
        judge=JudgeOutcomeV11(model="fast", status="ok", confidence=0.8),
        timings=Timings(submitted_at=now, completed_at=now, total_ms=1.0),
        answered=1,
        tags=["upgrade"],
    )

    def renamed(message: Any, request_id: str) -> bytes:
        return json.dumps({**v2(message), "request_id": request_id}).encode()

    return [
        (topics.REQUESTS, request.request_id.encode(), encode(request)),
        (topics.ANSWERS, dispatch.encode(), encode(plan)),  # the plan ahead of the task's answer
        (topics.TASKS, topics.task_key(dispatch, 0), encode(task)),
        (topics.RESULTS, result.request_id.encode(), encode(result)),
        (topics.REQUESTS, f"{run}-v2".encode(), renamed(request, f"{run}-v2")),
        (topics.TASKS, f"{run}-v2-task".encode(), renamed(task, f"{run}-v2-task")),
        (topics.ANSWERS, f"{run}-v2-plan".encode(), renamed(plan, f"{run}-v2-plan")),
    ]


async def main(bootstrap: str, run: str) -> dict[str, Any]:
    waiting = {f"{run}-request": "request", f"{run}-dispatch": "dispatch"}
    loop = asyncio.get_running_loop()
    results: dict[str, asyncio.Future[FusedResultV11]] = {
        name: loop.create_future() for name in waiting.values()
    }

    def on_record(record: Any) -> None:
        try:
            result = decode(RESULT_V11, record.value)
        except DecodeError:
            return  # chunks, and other messages of the topic
        name = waiting.get(result.request_id)
        if name is not None and not results[name].done():
            results[name].set_result(result)

    tap = TopicTap(bootstrap, topics.RESULTS, on_record)
    await tap.start()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=limits.MAX_MESSAGE_BYTES
    )
    await producer.start()
    try:
        for topic, key, value in messages(run):
            await producer.send_and_wait(topic, value, key=key)
        await asyncio.wait(results.values(), timeout=WAIT_S)
    finally:
        await producer.stop()
        await tap.stop()
    return {name: _summary(future) for name, future in results.items()}


def _summary(future: "asyncio.Future[FusedResultV11]") -> dict[str, Any]:
    if not future.done():
        return {"status": f"no result within {WAIT_S:.0f} s"}
    result = future.result()
    return {
        "status": result.status,
        "answer": result.answer,
        "error": result.error,
        "tags": result.tags,  # a 1.0 judge wrote it: the 1.1 reader takes the default
        "judge_confidence": result.judge.confidence if result.judge else None,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))), flush=True)
