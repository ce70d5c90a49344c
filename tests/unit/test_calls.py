"""fusion.panel_worker.calls.answer_task: every task ends in exactly one PanelAnswer."""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fusion.models import ModelHTTPError, ModelReply, OnDelta, ToolChoice, ToolDefinition, ToolRound
from fusion.panel_worker.calls import answer_task
from fusion_contracts import ChatMessage, ModelSpec, PanelTask, Usage, limits


@dataclass
class FakeModels:
    reply: ModelReply | Exception = field(default_factory=lambda: ModelReply("  An answer.  ", Usage()))
    delay_s: float = 0.0
    calls: list[tuple[ModelSpec, list[ChatMessage], dict[str, Any] | None]] = field(default_factory=list)

    async def complete_with_tools(
        self,
        spec: ModelSpec,
        messages: list[ChatMessage],
        tools: Sequence[ToolDefinition],
        rounds: Sequence[ToolRound],
        *,
        tool_choice: ToolChoice = "auto",
        deadline: float | None = None,
    ) -> ModelReply:
        """Never calls a tool: answers as `complete` does."""
        return await self.complete(spec, messages, deadline=deadline)

    async def complete(
        self,
        spec: ModelSpec,
        messages: list[ChatMessage],
        json_schema: dict[str, Any] | None = None,
        *,
        stop: Sequence[str] = (),
        on_delta: OnDelta | None = None,
        deadline: float | None = None,
    ) -> ModelReply:
        self.calls.append((spec, messages, json_schema))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def task(deadline_in_s: float = 30.0) -> PanelTask:
    now = datetime.now(UTC)
    return PanelTask(
        request_id="r-1",
        member_index=2,
        member=ModelSpec(model="alpha-model", temperature=0.5),
        messages=[ChatMessage(role="user", content="Why is the sky blue?")],
        deadline_at=now + timedelta(seconds=deadline_in_s),
        dispatched_at=now,
    )


async def test_ok_answer_with_text_and_usage() -> None:
    usage = Usage(input_tokens=12, output_tokens=34)
    models = FakeModels(reply=ModelReply("  Rayleigh scattering.\n", usage))
    the_task = task()
    answer = await answer_task(the_task, models, "worker-7")

    assert answer.status == "ok"
    assert answer.text == "Rayleigh scattering."
    assert answer.usage == usage
    assert answer.error is None
    assert answer.request_id == "r-1"
    assert answer.member_index == 2
    assert answer.model == "alpha-model"
    assert answer.worker == "worker-7"
    assert answer.latency_ms >= 0
    assert answer.finished_at.tzinfo is not None
    assert models.calls == [(the_task.member, the_task.messages, None)]


async def test_long_answer_is_cut_to_the_contract_limit() -> None:
    models = FakeModels(reply=ModelReply("x" * (limits.MAX_ANSWER_CHARS + 10)))
    answer = await answer_task(task(), models, "w")
    assert answer.status == "ok"
    assert answer.text is not None
    assert len(answer.text) == limits.MAX_ANSWER_CHARS


async def test_deadline_already_past_times_out_without_calling_the_model() -> None:
    models = FakeModels()
    answer = await answer_task(task(deadline_in_s=-1.0), models, "w")
    assert answer.status == "timeout"
    assert answer.text is None
    assert answer.error is not None
    assert "deadline passed before the call started" in answer.error
    assert models.calls == []


async def test_slow_model_times_out_at_the_deadline() -> None:
    models = FakeModels(delay_s=10.0)
    started = time.perf_counter()
    answer = await answer_task(task(deadline_in_s=0.2), models, "w")
    elapsed = time.perf_counter() - started

    assert answer.status == "timeout"
    assert answer.text is None
    assert answer.error is not None
    assert "panel deadline" in answer.error
    assert len(models.calls) == 1
    assert elapsed < 2.0  # cut at the deadline, not after the model's 10 s
    assert answer.latency_ms >= 150


async def test_model_error_is_an_error_with_its_message() -> None:
    models = FakeModels(reply=ModelHTTPError("provider answered HTTP 503: overloaded", status_code=503))
    answer = await answer_task(task(), models, "w")
    assert answer.status == "error"
    assert answer.error == "provider answered HTTP 503: overloaded"
    assert answer.text is None


async def test_long_model_error_message_is_cut_to_fit_the_contract() -> None:
    models = FakeModels(reply=ModelHTTPError("e" * 5000, status_code=500))
    answer = await answer_task(task(), models, "w")
    assert answer.status == "error"
    assert answer.error == "e" * 2000


async def test_empty_text_is_an_error_keeping_the_usage() -> None:
    usage = Usage(input_tokens=9, output_tokens=0)
    answer = await answer_task(task(), FakeModels(reply=ModelReply(" \n\t ", usage)), "w")
    assert answer.status == "error"
    assert answer.error == "the model returned an empty answer"
    assert answer.text is None
    assert answer.usage == usage
