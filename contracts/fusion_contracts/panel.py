"""What travels between the dispatcher, the panel workers and the judge."""

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Discriminator, Field, NonNegativeFloat, NonNegativeInt

from fusion_contracts.common import (
    CallStatus,
    ChatMessage,
    Contract,
    FailureReason,
    Instant,
    ModelName,
    ModelSpec,
    RequestDigest,
    RequestId,
    SchemaVersion,
    Source,
    Strategy,
    ToolCounts,
    ToolSpec,
    Usage,
    Usd,
)
from fusion_contracts.limits import (
    DEFAULT_MAX_TOOL_CALLS,
    MAX_ANSWER_CHARS,
    MAX_PANEL_MEMBERS,
    MAX_SOURCES,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    SCHEMA_VERSION,
)
from fusion_contracts.request import ReplyTo


class PanelTask(Contract):
    """One panel member's call, on `fusion.tasks`."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    request_id: RequestId
    request_digest: RequestDigest | None = None
    member_index: NonNegativeInt = Field(lt=MAX_PANEL_MEMBERS)
    member: ModelSpec
    messages: list[ChatMessage] = Field(min_length=1)
    deadline_at: Instant = Field(description="The member's answer is useless after this instant.")
    dispatched_at: Instant
    tools: list[ToolSpec] = Field(
        default_factory=list, max_length=MAX_TOOLS, description="None: no research."
    )
    max_tool_calls: int = Field(default=DEFAULT_MAX_TOOL_CALLS, ge=1, le=MAX_TOOL_CALLS)


class PanelPlan(Contract):
    """What the judge waits for, on `fusion.answers` ahead of the answers of the same request."""

    kind: Literal["plan"] = "plan"
    schema_version: SchemaVersion = SCHEMA_VERSION
    request_id: RequestId
    request_digest: RequestDigest | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    members: list[ModelSpec] = Field(min_length=1, max_length=MAX_PANEL_MEMBERS)
    judge: ModelSpec
    quorum: int = Field(ge=1, le=MAX_PANEL_MEMBERS)
    grace_s: NonNegativeFloat
    panel_deadline_at: Instant = Field(description="The judge stops waiting for members here.")
    deadline_at: Instant = Field(description="The fused result is due here.")
    submitted_at: Instant
    dispatched_at: Instant
    reply_to: ReplyTo | None = None
    stream: bool = False
    progress: bool = False
    strategy: Strategy = "synthesize"
    analysis_temperature: float = Field(
        default=0.0, ge=0.0, le=2.0, description="For the judge's analysis, choice and tie-break calls."
    )


class PanelAnswer(Contract):
    """One member's outcome, on `fusion.answers`."""

    kind: Literal["answer"] = "answer"
    schema_version: SchemaVersion = SCHEMA_VERSION
    request_id: RequestId
    request_digest: RequestDigest | None = None
    member_index: NonNegativeInt = Field(lt=MAX_PANEL_MEMBERS)
    model: ModelName
    status: CallStatus
    text: str | None = Field(default=None, max_length=MAX_ANSWER_CHARS)
    error: str | None = Field(default=None, max_length=2_000)
    error_status: int | None = Field(default=None, description="The provider's HTTP status, if it sent one.")
    usage: Usage = Usage()
    cost_usd: Usd = Field(default=Decimal(0), ge=0, description="As reported by the provider, or priced.")
    latency_ms: NonNegativeFloat
    finished_at: Instant
    worker: str = Field(default="", max_length=200)
    sources: list[Source] = Field(
        default_factory=list,
        max_length=MAX_SOURCES,
        description="What the member's tools returned, in order: the answer cites them as [n], from 1.",
    )
    tool_calls: ToolCounts = Field(default_factory=dict)


class PanelRejection(Contract):
    """A request the dispatcher refused (invalid, expired, over budget), on `fusion.answers`: the
    judge publishes its `rejected` result, exactly once, unless the request was dispatched before
    (a redelivery that found it expired), in which case its plan wins."""

    kind: Literal["rejection"] = "rejection"
    schema_version: SchemaVersion = SCHEMA_VERSION
    request_id: RequestId
    request_digest: RequestDigest | None = None
    error: str = Field(max_length=4_000)
    failure_reason: FailureReason = "invalid_request"
    submitted_at: Instant
    rejected_at: Instant
    reply_to: ReplyTo | None = None


AnswersMessage = Annotated[PanelPlan | PanelAnswer | PanelRejection, Discriminator("kind")]
"""Everything on `fusion.answers`."""
