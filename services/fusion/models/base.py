"""What every model adapter takes and returns, independent of the provider's API shape."""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from fusion_contracts import ChatMessage, ModelSpec, Usage


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

    @classmethod
    def for_spec(
        cls,
        upstream_id: str,
        spec: ModelSpec,
        messages: list[ChatMessage],
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] = (),
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
        )


@dataclass(frozen=True, slots=True)
class ModelReply:
    text: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None
    """From an adapter: the cost the provider reported, if any. From the `ModelRouter`: the call's cost,
    reported or priced from the catalog."""


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
