"""The parts of OpenAI's Chat Completions request that the gateway reads. Other fields pass through."""

from typing import Any, Literal

from fusion_contracts import Strategy
from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessageIn(_Lenient):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class PanelMemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    system_prompt: str | None = None


class FusionOptions(BaseModel):
    """The `fusion` object of a request body (the OpenAI SDK sends it through `extra_body`)."""

    model_config = ConfigDict(extra="forbid")

    panel: list[str | PanelMemberIn] | None = Field(
        default=None, description="Catalog model names, or objects with per-member parameters."
    )
    judge: str | PanelMemberIn | None = None
    quorum: int | None = None
    grace_s: float | None = None
    deadline_s: float | None = None
    strategy: Strategy | None = Field(
        default=None, description="synthesize, synthesize-once, select or vote; the preset's by default."
    )
    analysis_temperature: float | None = Field(
        default=None, description="The judge's temperature when it analyses or chooses; 0 by default."
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None,
        description="Research tools for every member (ToolSpec objects, docs/research.md); [] for none; "
        "the preset's by default.",
    )
    max_tool_calls: int | None = Field(default=None, description="Tool calls per member answer.")
    progress: bool | None = Field(
        default=None,
        description="With stream: chunks without choices carry `fusion_progress` events as members "
        "answer and the judge analyses.",
    )


class ChatCompletionRequest(_Lenient):
    model: str = Field(description="`fusion`, `fusion/<preset>`, or any catalog model (passed through).")
    messages: list[ChatMessageIn]
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    plugins: list[dict[str, Any]] | None = Field(
        default=None, description="OpenRouter's plugins: the `fusion` plugin fuses; others are ignored."
    )
    fusion: FusionOptions | None = None


FUSION_TOOL_NAME = "fusion"

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "api_error",
]
