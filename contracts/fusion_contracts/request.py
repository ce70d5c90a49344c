"""What a client publishes on `fusion.requests`."""

import uuid

from pydantic import Field, model_validator

from fusion_contracts.common import (
    ChatMessage,
    Contract,
    Instant,
    ModelName,
    ModelSpec,
    RequestId,
    SchemaVersion,
    Strategy,
    ToolSpec,
    Usd,
    utc_now,
)
from fusion_contracts.limits import (
    DEFAULT_DEADLINE_S,
    DEFAULT_GRACE_S,
    MAX_DEADLINE_S,
    MAX_GRACE_S,
    MAX_MESSAGES,
    MAX_PANEL_MEMBERS,
    MAX_PROMPT_CHARS,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    SCHEMA_VERSION,
)


class Policy(Contract):
    """When the judge may stop waiting for the panel."""

    quorum: int | None = Field(
        default=None, ge=1, le=MAX_PANEL_MEMBERS, description="Answers needed before the grace starts; all."
    )
    grace_s: float = Field(
        default=DEFAULT_GRACE_S, ge=0.0, le=MAX_GRACE_S, description="Wait for stragglers once quorum is in."
    )
    deadline_s: float = Field(
        default=DEFAULT_DEADLINE_S,
        gt=0.0,
        le=MAX_DEADLINE_S,
        description="Seconds from submission to the fused result.",
    )
    max_cost_usd: Usd | None = Field(
        default=None, gt=0, description="Reject the request before any call when its estimate is higher."
    )
    judge_share: float = Field(
        default=0.35,
        ge=0.05,
        le=0.9,
        description="Share of the deadline kept for the judge: the panel is cut off at the rest of it.",
    )


class ReplyTo(Contract):
    """Where the judge publishes the result, when not on `fusion.results`."""

    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    partition: int | None = Field(default=None, ge=0)


class FusionRequest(Contract):
    schema_version: SchemaVersion = SCHEMA_VERSION
    request_id: RequestId = Field(default_factory=lambda: uuid.uuid4().hex)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    preset: ModelName | None = Field(default=None, description="A catalog preset; the default when no panel.")
    panel: list[ModelSpec] | None = Field(default=None, min_length=1, max_length=MAX_PANEL_MEMBERS)
    judge: ModelSpec | None = Field(default=None, description="Overrides the preset's judge.")
    policy: Policy = Policy()
    reply_to: ReplyTo | None = None
    stream: bool = Field(default=False, description="Publish the final answer in AnswerChunks as written.")
    progress: bool = Field(
        default=False, description="Publish FusionProgress events (members, analysis) ahead of the result."
    )
    strategy: Strategy | None = Field(default=None, description="How to fuse; the preset's by default.")
    analysis_temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="The judge's temperature when it analyses or chooses; 0."
    )
    tools: list[ToolSpec] | None = Field(
        default=None,
        max_length=MAX_TOOLS,
        description="Research tools for every member; the preset's when None, none when [].",
    )
    max_tool_calls: int | None = Field(
        default=None, ge=1, le=MAX_TOOL_CALLS, description="Tool calls per member answer; the preset's."
    )
    submitted_at: Instant = Field(default_factory=utc_now)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)

    @model_validator(mode="after")
    def _coherent(self) -> "FusionRequest":
        if self.preset is not None and self.panel is not None:
            raise ValueError("give a preset or a panel, not both")
        if not any(message.role == "user" for message in self.messages):
            raise ValueError("messages must contain at least one user message")
        prompt_chars = sum(len(message.content) for message in self.messages)
        if prompt_chars > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {prompt_chars} characters; the limit is {MAX_PROMPT_CHARS}")
        quorum = self.policy.quorum
        if self.panel is not None and quorum is not None and quorum > len(self.panel):
            raise ValueError(f"quorum {quorum} is larger than the panel of {len(self.panel)}")
        return self
