"""The services as separate processes on the real broker, with the stand-in model server."""

import asyncio
import time
from datetime import timedelta

import pytest
from fusion.client import FusionClient
from fusion.kafka.broker import Outbox, build_broker
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, PanelAnswer, PanelTask, Policy, topics
from fusion_contracts.common import utc_now

pytestmark = [pytest.mark.kafka]


def ask(*models: str, judge: str = "fast", **policy: float) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content="What is Kafka?")],
        panel=[ModelSpec(model=model) for model in models],
        judge=ModelSpec(model=judge),
        policy=Policy(**policy),
    )


async def test_a_panel_is_fused(client: FusionClient) -> None:
    result = await client.fuse(
        FusionRequest(messages=[ChatMessage(role="user", content="hi")], preset="standin")
    )

    assert result.status == "complete"
    assert result.release == "all"
    assert result.answer_source == "judge"
    assert result.answer
    assert result.answer.startswith("Stand-in answer from sleep-20")
    assert result.analysis is not None
    assert result.analysis.consensus
    assert [member.status for member in result.members] == ["ok", "ok", "ok"]
    assert result.usage.total.input_tokens == 12 * 5  # three members, two judge calls


async def test_a_stalled_member_times_out_at_the_deadline(client: FusionClient) -> None:
    request = ask("fast", "stall", deadline_s=4.0, judge_share=0.1)
    started = time.monotonic()

    result = await client.fuse(request)
    elapsed = time.monotonic() - started

    print(f"\nstalled member: result after {elapsed:.2f} s (panel cut-off 3.6 s, deadline 4.0 s)")
    assert 3.6 - 0.2 <= elapsed <= 4.0 + 1.0
    assert result.status == "partial"
    assert result.release == "deadline"
    assert result.members[0].status == "ok"
    assert result.members[1].status == "timeout"
    assert result.answer


async def test_every_member_unreachable_fails_at_once_with_each_reason(client: FusionClient) -> None:
    request = ask("unreachable-a", "unreachable-b", "unreachable-c", deadline_s=60.0)
    started = time.monotonic()

    result = await client.fuse(request)
    elapsed = time.monotonic() - started

    print(f"\nunreachable panel: failed result after {elapsed:.2f} s of a 60 s deadline")
    assert elapsed < 5.0
    assert result.status == "failed"
    assert result.release == "all"
    assert result.answer is None
    assert [member.status for member in result.members] == ["error", "error", "error"]
    assert result.error is not None
    for member in result.members:
        assert member.error
        assert "unreachable" in member.error
        assert f"member {member.index} ({member.model})" in result.error


async def test_a_quorum_releases_before_a_straggler(client: FusionClient) -> None:
    request = ask("fast", "fast", "stall", quorum=2, grace_s=0.3, deadline_s=30.0)
    started = time.monotonic()

    result = await client.fuse(request)

    assert time.monotonic() - started < 5.0
    assert result.release == "quorum"
    assert result.status == "partial"
    assert result.members[2].status == "timeout"


async def test_a_failing_judge_falls_back_to_the_best_member(client: FusionClient) -> None:
    result = await client.fuse(ask("fast", "fast", judge="broken"))

    assert result.status == "partial"
    assert result.answer_source == "best_member"
    assert result.judge is not None
    assert result.judge.status == "error"
    assert result.answer in {member.text for member in result.members}


async def test_an_unknown_model_is_rejected_with_a_result(client: FusionClient) -> None:
    result = await client.fuse(ask("fast", "no-such-model"), timeout_s=10)

    assert result.status == "rejected"
    assert result.error
    assert "unknown model 'no-such-model'" in result.error


async def test_twenty_requests_at_once_get_exactly_one_result_each(client: FusionClient) -> None:
    requests = [
        FusionRequest(messages=[ChatMessage(role="user", content=f"q{i}")], preset="standin")
        for i in range(20)
    ]

    futures = await asyncio.gather(*(client.submit(request) for request in requests))
    results = await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
    await asyncio.sleep(2.0)  # room for a duplicate to show up

    assert {result.request_id for result in results} == {request.request_id for request in requests}
    assert all(result.status == "complete" for result in results)
    assert [client.results.seen[request.request_id] for request in requests] == [1] * 20


async def test_one_worker_runs_sixty_calls_at_once(settings: Settings, client: FusionClient) -> None:
    """A stand-in that answers after 1 s: 60 member calls on one panel-worker process."""
    answers: list[PanelAnswer] = []
    done = asyncio.Event()
    now = utc_now()
    tasks = [
        PanelTask(
            request_id=f"sixty-{now.timestamp():.0f}-{i}",
            member_index=0,
            member=ModelSpec(model="slow"),
            messages=[ChatMessage(role="user", content="wait a second")],
            deadline_at=now + timedelta(seconds=30),
            dispatched_at=now,
        )
        for i in range(60)
    ]

    def collect(message: object) -> None:
        if isinstance(message, PanelAnswer):
            answers.append(message)
            if len(answers) == len(tasks):
                done.set()

    watcher = client._answers
    assert watcher is not None
    for task in tasks:
        watcher.listen(task.request_id, collect)
    broker = build_broker(settings, "sixty")
    await broker.start()
    try:
        outbox = Outbox(broker)
        started = time.monotonic()
        await asyncio.gather(*(outbox.send(topics.TASKS, t, topics.task_key(t.request_id, 0)) for t in tasks))
        await asyncio.wait_for(done.wait(), timeout=20)
        elapsed = time.monotonic() - started
    finally:
        await broker.stop()

    print(f"\n60 concurrent member calls of 1 s each on one panel worker: {elapsed:.2f} s")
    assert elapsed < 3.0
    assert all(answer.status == "ok" for answer in answers)
