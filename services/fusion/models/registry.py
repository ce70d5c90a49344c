"""Adapters by API shape, and the router that sends a model name to its provider's adapter."""

from collections.abc import Callable, Sequence
from typing import Any

import httpx
from fusion_contracts import ChatMessage, ModelSpec

from fusion.catalog import Catalog, CatalogError, Provider
from fusion.models.base import ChatModel, ModelCall, ModelReply, OnDelta
from fusion.models.errors import ModelConfigError
from fusion.models.openai_compat import OpenAICompatModel

AdapterFactory = Callable[[str, Provider, httpx.AsyncBaseTransport | None], ChatModel]


def _http_client(
    provider: Provider, headers: dict[str, str], transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=provider.base_url.rstrip("/") + "/",
        headers=headers,
        timeout=httpx.Timeout(provider.timeout_s, connect=10.0),
        limits=httpx.Limits(
            max_connections=provider.max_concurrency, max_keepalive_connections=provider.max_concurrency
        ),
        transport=transport,
    )


def _openai_adapter(name: str, provider: Provider, transport: httpx.AsyncBaseTransport | None) -> ChatModel:
    headers = dict(provider.headers)
    key = provider.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return OpenAICompatModel(
        _http_client(provider, headers, transport), name, provider.structured_output, secrets=[key or ""]
    )


ADAPTERS: dict[str, AdapterFactory] = {"openai": _openai_adapter}


def missing_key(provider: Provider) -> str | None:
    """The env var to set, when the provider needs a key that is not set."""
    if provider.key_env and not provider.api_key():
        return provider.key_env
    return None


class ModelRouter:
    """Calls any catalog model by name. One adapter, and one connection pool, per provider."""

    def __init__(self, catalog: Catalog, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._catalog = catalog
        self._transport = transport
        self._adapters: dict[str, ChatModel] = {}

    def _adapter(self, provider_name: str) -> ChatModel:
        adapter = self._adapters.get(provider_name)
        if adapter is None:
            provider = self._catalog.providers[provider_name]
            if env_var := missing_key(provider):
                raise ModelConfigError(f"provider {provider_name!r} needs an API key: set {env_var}")
            factory = ADAPTERS.get(provider.api)
            if factory is None:
                raise ModelConfigError(f"provider {provider_name!r} uses unknown API shape {provider.api!r}")
            adapter = self._adapters[provider_name] = factory(provider_name, provider, self._transport)
        return adapter

    async def complete(
        self,
        spec: ModelSpec,
        messages: list[ChatMessage],
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] = (),
        on_delta: OnDelta | None = None,
    ) -> ModelReply:
        try:
            model = self._catalog.model(spec.model)
        except CatalogError as error:
            raise ModelConfigError(str(error)) from error
        adapter = self._adapter(model.provider)
        return await adapter.complete(
            ModelCall.for_spec(model.id, spec, messages, json_schema, stop), on_delta
        )

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
