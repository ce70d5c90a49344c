"""What every model adapter takes and returns, independent of the provider's API shape."""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from fusion_contracts import ChatMessage, ModelSpec, Usage


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A tool as the model is told of it: its name, what it does, and its arguments' JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """As the model wrote them: JSON text that may be invalid."""


@dataclass(frozen=True, slots=True)
class ToolRound:
    """One model turn that called tools, and what the tools returned (a text per call, in order)."""

    calls: tuple[ToolCall, ...]
    results: tuple[str, ...]
    text: str = ""
    """What the model wrote alongside its calls, if anything."""


ToolChoice = Literal["auto", "none"]


@dataclass(frozen=True, slots=True)
class ModelCall:
    upstream_id: str
    messages: list[ChatMessage]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    reasoning_effort: str | None = None
    json_schema: dict[str, Any] | None = None
    """Ask for a JSON reply that follows this schema, where the provider supports it."""
    stop: tuple[str, ...] = ()
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: ToolChoice = "auto"
    """"none": the tools stay listed (the rounds refer to them) but the model must answer."""
    rounds: tuple[ToolRound, ...] = ()
    """Tool rounds so far, after `messages`."""

    @classmethod
    def for_spec(
        cls,
        upstream_id: str,
        spec: ModelSpec,
        messages: list[ChatMessage],
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] = (),
        *,
        tools: Sequence[ToolDefinition] = (),
        tool_choice: ToolChoice = "auto",
        rounds: Sequence[ToolRound] = (),
    ) -> "ModelCall":
        if spec.system_prompt:
            messages = [ChatMessage(role="system", content=spec.system_prompt), *messages]
        return cls(
            upstream_id=upstream_id,
            messages=messages,
            temperature=spec.temperature,
            top_p=spec.top_p,
            max_tokens=spec.max_tokens,
            seed=spec.seed,
            reasoning_effort=spec.reasoning_effort,
            json_schema=json_schema,
            stop=tuple(stop),
            tools=tuple(tools),
            tool_choice=tool_choice,
            rounds=tuple(rounds),
        )


@dataclass(frozen=True, slots=True)
class ModelReply:
    text: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None
    """From an adapter: the cost the provider reported, if any. From the `ModelRouter`: the call's cost,
    reported or priced from the catalog."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools the model asked to run, when it was offered some."""


OnDelta = Callable[[str], Awaitable[None]]
"""Receives each piece of a streamed answer as the provider sends it."""


class ChatModel(Protocol):
    """One provider's chat API. Implementations raise `ModelError` subclasses, never a raw httpx error.

    With `on_delta`, the answer is streamed: each piece goes to `on_delta` as it arrives, and the
    returned reply holds the whole text (and the usage, where the provider reports it in streams)."""

    async def complete(self, call: ModelCall, on_delta: OnDelta | None = None) -> ModelReply: ...

    async def passthrough(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def passthrough_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class CompletesChat(Protocol):
    """Anything that calls a catalog model by its spec: the `ModelRouter`, or a fake in tests."""

    async def complete(
        self,
        spec: ModelSpec,
        messages: list[ChatMessage],
        json_schema: dict[str, Any] | None = None,
        *,
        stop: Sequence[str] = (),
        on_delta: OnDelta | None = None,
        deadline: float | None = None,
    ) -> ModelReply: ...


class UsesTools(CompletesChat, Protocol):
    """A `CompletesChat` that can also offer tools (the `ModelRouter`): for panel members' research."""

    async def complete_with_tools(
        self,
        spec: ModelSpec,
        messages: list[ChatMessage],
        tools: Sequence[ToolDefinition],
        rounds: Sequence[ToolRound],
        *,
        tool_choice: ToolChoice = "auto",
        deadline: float | None = None,
    ) -> ModelReply: ...
