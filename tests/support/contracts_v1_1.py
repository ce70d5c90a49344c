"""The contracts as a newer release would have them: schema 1.1, the same major with optional fields
added, at the top of messages and inside them (a model spec, the policy, the usage, the judge's
outcome). Writers of 1.1 send them; readers of 1.0 must ignore them (the tolerant reader of
docs/kafka-api.md), and readers of 1.1 take the defaults from writers of 1.0.

`v2` makes any message a message of the next major, which a reader of 1 dead-letters."""

from typing import Any

from fusion_contracts import (
    AnswerChunk,
    FusedResult,
    FusionRequest,
    JudgeOutcome,
    ModelSpec,
    PanelAnswer,
    PanelPlan,
    PanelTask,
    Policy,
    ReplyTo,
    Usage,
)
from pydantic import BaseModel, Field


class ModelSpecV11(ModelSpec):
    provider_hint: str | None = Field(default=None, description="1.1: a provider the spec prefers.")


class PolicyV11(Policy):
    priority: int = Field(default=0, description="1.1: higher goes first.")


class ReplyToV11(ReplyTo):
    compression: str | None = None


class UsageV11(Usage):
    cached_tokens: int = 0


class JudgeOutcomeV11(JudgeOutcome):
    confidence: float | None = None


class FusionRequestV11(FusionRequest):
    policy: PolicyV11 = PolicyV11()
    judge: ModelSpecV11 | None = None
    reply_to: ReplyToV11 | None = None
    tags: list[str] = Field(default_factory=list, description="1.1: labels the sender reads back.")


class PanelTaskV11(PanelTask):
    member: ModelSpecV11
    attempt: int = 1


class PanelPlanV11(PanelPlan):
    judge: ModelSpecV11
    reply_to: ReplyToV11 | None = None
    priority: int = 0


class PanelAnswerV11(PanelAnswer):
    usage: UsageV11 = UsageV11()
    reasoning: str | None = None


class FusedResultV11(FusedResult):
    judge: JudgeOutcomeV11 | None = None
    tags: list[str] = Field(default_factory=list)


class AnswerChunkV11(AnswerChunk):
    final: bool = False


NEW_FIELDS = ("provider_hint", "priority", "compression", "cached_tokens", "confidence", "tags", "attempt")
"""Names only 1.1 has: a reader of 1.0 must not carry any of them on."""


def v2(message: BaseModel) -> dict[str, Any]:
    """`message` as JSON data of schema major 2."""
    return {**message.model_dump(mode="json"), "schema_version": 2}
