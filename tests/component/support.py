"""Helpers of the component tests: a fake model client, topic captures, polling, message builders."""

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from faststream.kafka import KafkaBroker, KafkaMessage
from fusion.kafka.codec import decode
from fusion.models import ModelError, ModelReply, OnDelta, ToolChoice, ToolDefinition, ToolRound
from fusion.observability.metrics import FusionMetrics
from fusion_contracts import (
    AnswersMessage,
    CallStatus,
    ChatMessage,
    DeadLetter,
    FusedResult,
    ModelSpec,
    PanelAnswer,
    PanelPlan,
    PanelRejection,
    PanelTask,
    ReplyTo,
    Timings,
    Usage,
)
from fusion_contracts.common import utc_now
from pydantic import TypeAdapter

T = TypeVar("T")

ANSWERS_ADAPTER: TypeAdapter[PanelPlan | PanelAnswer | PanelRejection] = TypeAdapter(AnswersMessage)
TASK_ADAPTER: TypeAdapter[PanelTask] = TypeAdapter(PanelTask)
RESULT_ADAPTER: TypeAdapter[FusedResult] = TypeAdapter(FusedResult)
DEAD_LETTER_ADAPTER: TypeAdapter[DeadLetter] = TypeAdapter(DeadLetter)

ANALYSIS_JSON = json.dumps(
    {
        "consensus": ["Answer 1 and Answer 2 agree"],
        "contradictions": [],
        "partial_coverage": [],
        "unique_insights": [],
        "blind_spots": ["sunsets"],
    }
)
FINAL_ANSWER = "The fused answer: Rayleigh scattering."


@dataclass
class FakeModels:
    """Answers any model: the judge's analysis call (with a schema) gets JSON, others get text.

    `gate`, when given, holds every call until it is set; `fail` names models that raise a
    ModelError, `crash` models that raise something else."""

    gate: asyncio.Event | None = None
    fail: set[str] = field(default_factory=set)
    crash: set[str] = field(default_factory=set)
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
        if self.gate is not None:
            await self.gate.wait()
        if spec.model in self.fail:
            raise ModelError(f"{spec.model} is broken")
        if spec.model in self.crash:
            raise RuntimeError("a bug in the adapter")
        usage = Usage(input_tokens=10, output_tokens=5)
        if json_schema is not None:
            return ModelReply(ANALYSIS_JSON, usage)
        if spec.model.startswith("judge"):
            return ModelReply(FINAL_ANSWER, usage)
        return ModelReply(f"{spec.model} says: Rayleigh scattering.", usage)


@dataclass(frozen=True)
class Captured:
    key: bytes | None
    body: bytes
    partition: int


class Capture:
    """Records everything published to some topics (subscribers without a group see every message)."""

    def __init__(self, broker: KafkaBroker, *topic_names: str) -> None:
        self.records: dict[str, list[Captured]] = {name: [] for name in topic_names}
        for name in topic_names:
            self._subscribe(broker, name)

    def _subscribe(self, broker: KafkaBroker, topic: str) -> None:
        @broker.subscriber(topic)
        async def capture(message: KafkaMessage) -> None:
            record = message.raw_message
            self.records[topic].append(
                Captured(key=record.key, body=message.body, partition=record.partition)  # type: ignore[union-attr]
            )

    def decoded(self, topic: str, adapter: TypeAdapter[T]) -> list[T]:
        return [decode(adapter, record.body) for record in self.records[topic]]

    def keys(self, topic: str) -> list[bytes | None]:
        return [record.key for record in self.records[topic]]


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Polls until `condition` holds; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


def in_flight(metrics: FusionMetrics) -> float | None:
    """The `fusion_in_flight` gauge a service reports: for the judge, its open requests and those
    being fused."""
    return metrics.registry.get_sample_value("fusion_in_flight")


def a_plan(
    request_id: str,
    *,
    members: int = 2,
    quorum: int | None = None,
    grace_s: float = 0.5,
    panel_deadline_in_s: float = 60.0,
    reply_to: ReplyTo | None = None,
) -> PanelPlan:
    now = datetime.now(UTC)
    return PanelPlan(
        request_id=request_id,
        messages=[ChatMessage(role="user", content="Why is the sky blue?")],
        members=[ModelSpec(model=f"member-{index}") for index in range(members)],
        judge=ModelSpec(model="judge-model"),
        quorum=quorum if quorum is not None else members,
        grace_s=grace_s,
        panel_deadline_at=now + timedelta(seconds=panel_deadline_in_s),
        deadline_at=now + timedelta(seconds=panel_deadline_in_s + 60),
        submitted_at=now,
        dispatched_at=now,
        reply_to=reply_to,
    )


def an_answer(request_id: str, index: int, status: CallStatus = "ok", text: str | None = None) -> PanelAnswer:
    return PanelAnswer(
        request_id=request_id,
        member_index=index,
        model=f"member-{index}",
        status=status,
        text=(text or f"member {index}: Rayleigh scattering.") if status == "ok" else None,
        error=None if status == "ok" else "failed",
        usage=Usage(input_tokens=1, output_tokens=2),
        latency_ms=5.0,
        finished_at=datetime.now(UTC),
    )


def a_result(request_id: str) -> FusedResult:
    now = utc_now()
    return FusedResult(
        request_id=request_id,
        status="complete",
        answer="Rayleigh scattering.",
        timings=Timings(submitted_at=now, completed_at=now, total_ms=1.0),
    )
