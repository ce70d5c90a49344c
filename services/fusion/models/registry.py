"""Adapters by API shape, and the router that sends a model name to its provider's adapter."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from fusion_contracts import ChatMessage, ModelSpec

from fusion.catalog import Catalog, CatalogError, Provider
from fusion.costs import call_cost
from fusion.models.anthropic import API_VERSION, AnthropicModel
from fusion.models.base import (
    ChatModel,
    ModelCall,
    ModelReply,
    OnDelta,
    ToolChoice,
    ToolDefinition,
    ToolRound,
)
from fusion.models.errors import ModelConfigError
from fusion.models.http import Endpoint
from fusion.models.openai_compat import OpenAICompatModel
from fusion.models.resilience import ProviderLimits, RetryPolicy, with_retries
from fusion.models.transport import AiohttpTransport
from fusion.observability.tracing import model_call_span
from fusion.research.base import CALLER_HEADER

AdapterFactory = Callable[[str, Provider, httpx.AsyncBaseTransport | None], ChatModel]


def _endpoint(
    provider: Provider, headers: dict[str, str], transport: httpx.AsyncBaseTransport | None
) -> Endpoint:
    return Endpoint(
        base_url=provider.base_url,
        transport=transport or AiohttpTransport(provider.max_concurrency),
        # Marks the call as Fusion's own: a Fusion gateway refuses it, so no model of a panel or a
        # judge can be Fusion itself (a loop).
        headers={**headers, CALLER_HEADER: "fusion"},
        timeout=httpx.Timeout(provider.timeout_s, connect=10.0),
    )


def _openai_adapter(name: str, provider: Provider, transport: httpx.AsyncBaseTransport | None) -> ChatModel:
    headers = dict(provider.headers)
    key = provider.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return OpenAICompatModel(
        _endpoint(provider, headers, transport), name, provider.structured_output, secrets=[key or ""]
    )


def _anthropic_adapter(
    name: str, provider: Provider, transport: httpx.AsyncBaseTransport | None
) -> ChatModel:
    headers = {"anthropic-version": API_VERSION, **provider.headers}
    key = provider.api_key()
    if key:
        headers["x-api-key"] = key
    return AnthropicModel(_endpoint(provider, headers, transport), name, secrets=[key or ""])


ADAPTERS: dict[str, AdapterFactory] = {"openai": _openai_adapter, "anthropic": _anthropic_adapter}
"""API shapes by the name a catalog provider gives in `api`. A new shape is a new entry here."""


DEFAULT_RETRY = RetryPolicy()


class ModelRouter:
    """Calls any catalog model by name. One adapter, one connection pool and one set of limits per
    provider, shared by every call in the process; retryable failures are retried within the deadline."""

    def __init__(
        self,
        catalog: Catalog,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._catalog = catalog
        self._transport = transport
        self._retry = retry
        self._adapters: dict[str, ChatModel] = {}
        self._limits: dict[str, ProviderLimits] = {}

    def _adapter(self, provider_name: str) -> ChatModel:
        adapter = self._adapters.get(provider_name)
        if adapter is None:
            provider = self._catalog.providers[provider_name]
            if env_var := provider.missing_key():
                raise ModelConfigError(f"provider {provider_name!r} needs an API key: set {env_var}")
            factory = ADAPTERS.get(provider.api)
            if factory is None:
                raise ModelConfigError(f"provider {provider_name!r} uses unknown API shape {provider.api!r}")
            adapter = self._adapters[provider_name] = factory(provider_name, provider, self._transport)
            self._limits[provider_name] = ProviderLimits(provider.max_concurrency, provider.rate_limit_per_s)
        return adapter

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
        """`deadline` is a `time.monotonic()` instant past which no retry starts."""
        return await self._call(
            spec,
            lambda model_id: ModelCall.for_spec(model_id, spec, messages, json_schema, stop),
            on_delta,
            deadline,
        )

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
        """One turn of a tool loop: the model sees the tools and the rounds so far."""
        return await self._call(
            spec,
            lambda model_id: ModelCall.for_spec(
                model_id, spec, messages, tools=tools, tool_choice=tool_choice, rounds=rounds
            ),
            None,
            deadline,
        )

    async def _call(
        self,
        spec: ModelSpec,
        build: Callable[[str], ModelCall],
        on_delta: OnDelta | None,
        deadline: float | None,
    ) -> ModelReply:
        try:
            model = self._catalog.model(spec.model)
        except CatalogError as error:
            raise ModelConfigError(str(error)) from error
        adapter = self._adapter(model.provider)
        limits = self._limits[model.provider]
        call = build(model.id)
        # A streamed call is not retried once text has gone out: the deltas cannot be taken back.
        retry = self._retry if on_delta is None else RetryPolicy(attempts=1)
        provider = self._catalog.providers[model.provider]
        with model_call_span(
            provider.api if provider.api != "openai" else model.provider,
            "chat",
            model.id,
            **{"gen_ai.request.temperature": spec.temperature, "gen_ai.request.max_tokens": spec.max_tokens},
        ) as span:
            reply = await with_retries(
                lambda: limits.run(lambda: adapter.complete(call, on_delta)), retry, deadline
            )
            cost = call_cost(model, reply.usage, reply.cost_usd)
            span.set_attribute("gen_ai.usage.input_tokens", reply.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", reply.usage.output_tokens)
            span.set_attribute("fusion.cost_usd", str(cost))
        return dataclasses.replace(reply, cost_usd=cost)

    def for_model(self, name: str) -> tuple[ChatModel, str]:
        """The adapter for a catalog model and the provider's id for it (for pass-through calls)."""
        try:
            model = self._catalog.model(name)
        except CatalogError as error:
            raise ModelConfigError(str(error)) from error
        return self._adapter(model.provider), model.id

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            await adapter.aclose()
        self._adapters.clear()
