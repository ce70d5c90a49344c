"""The catalog: which providers exist, which models they serve, and the presets that combine them.

The built-in catalog is `default.toml` beside this file. `FUSION_CATALOG` names a file that extends it
(entries with the same name replace the built-in ones), or replaces it when the file says
`replace = true`.
"""

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from fusion_contracts import ModelSpec, Strategy, ToolSpec, limits
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CATALOG = Path(__file__).with_name("default.toml")


class CatalogError(ValueError):
    """The catalog file is missing, unreadable or inconsistent."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Provider(_Entry):
    api: str = Field(description="Adapter name: 'openai' (chat completions) or another registered shape.")
    base_url: str
    key_env: str | None = Field(default=None, description="Name of the env var holding the API key.")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=120.0, gt=0)
    max_concurrency: int = Field(default=32, ge=1, description="Calls at once, per process.")
    rate_limit_per_s: float | None = Field(
        default=None, gt=0, description="Requests per second, per process."
    )
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema",
        description="How to ask for schema-shaped JSON: OpenAI's json_schema, llama.cpp's json_object "
        "with a schema, or not at all (the prompt alone asks for JSON).",
    )

    def api_key(self) -> str | None:
        return os.environ.get(self.key_env) if self.key_env else None

    def missing_key(self) -> str | None:
        """The env var to set, when this provider needs a key that is not set."""
        return self.key_env if self.key_env and not self.api_key() else None


class Model(_Entry):
    provider: str
    id: str = Field(description="The provider's own name for the model.")
    input_usd_per_mtok: Decimal = Decimal(0)
    output_usd_per_mtok: Decimal = Decimal(0)
    context_window: int | None = None
    max_output_tokens: int | None = Field(default=None, description="Assumed output when a call sets none.")
    description: str = ""


class Preset(_Entry):
    panel: list[ModelSpec] = Field(min_length=1)
    judge: ModelSpec
    quorum: int | None = None
    strategy: Strategy = Field(default="synthesize", description="How its panel's answers are fused.")
    tools: list[ToolSpec] = Field(
        default_factory=list, max_length=limits.MAX_TOOLS, description="Research tools for its members."
    )
    max_tool_calls: int = Field(default=limits.DEFAULT_MAX_TOOL_CALLS, ge=1, le=limits.MAX_TOOL_CALLS)
    description: str = ""


def _env(name: str | None) -> str | None:
    return os.environ.get(name) if name else None


class SearchBackend(_Entry):
    """A web search API for the `web_search` tool (docs/research.md)."""

    api: Literal["searxng", "brave", "tavily", "exa"]
    base_url: str | None = Field(
        default=None, description="The API's root; the hosted API's own when None (SearXNG needs one)."
    )
    key_env: str | None = Field(default=None, description="Name of the env var holding the API key.")
    timeout_s: float = Field(default=15.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    def api_key(self) -> str | None:
        return _env(self.key_env)

    def missing_key(self) -> str | None:
        return self.key_env if self.key_env and not self.api_key() else None

    @model_validator(mode="after")
    def _reachable(self) -> "SearchBackend":
        if self.api == "searxng" and self.base_url is None:
            raise ValueError("a searxng backend needs the base_url of your SearXNG instance")
        return self


class McpServer(_Entry):
    """An MCP server whose tools panel members may call: a command run over stdio, or a URL
    (streamable HTTP). Secrets come from the worker's environment, named in `env_from`/`headers_from`."""

    transport: Literal["stdio", "http"]
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="Set in the server's environment.")
    env_from: dict[str, str] = Field(
        default_factory=dict, description="Server env var -> the worker's env var that holds its value."
    )
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    headers_from: dict[str, str] = Field(
        default_factory=dict, description="HTTP header -> the worker's env var that holds its value."
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Connecting and each tool call.")
    description: str = ""

    @model_validator(mode="after")
    def _runnable(self) -> "McpServer":
        if self.transport == "stdio" and not self.command:
            raise ValueError("a stdio MCP server needs a command")
        if self.transport == "http" and not self.url:
            raise ValueError("an http MCP server needs a url")
        return self

    def missing_env(self) -> list[str]:
        """The worker's env vars this server needs that are not set."""
        return [name for name in [*self.env_from.values(), *self.headers_from.values()] if not _env(name)]


class Catalog(_Entry):
    default_preset: str
    providers: dict[str, Provider]
    models: dict[str, Model]
    presets: dict[str, Preset]
    search_backends: dict[str, SearchBackend] = Field(default_factory=dict)
    default_search_backend: str | None = None
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references_resolve(self) -> "Catalog":
        for name, model in self.models.items():
            if model.provider not in self.providers:
                raise ValueError(f"model {name!r} names unknown provider {model.provider!r}")
        for name, preset in self.presets.items():
            for spec in [*preset.panel, preset.judge]:
                if spec.model not in self.models:
                    raise ValueError(f"preset {name!r} names unknown model {spec.model!r}")
        if self.default_preset not in self.presets:
            raise ValueError(f"default preset {self.default_preset!r} is not defined")
        if (
            self.default_search_backend is not None
            and self.default_search_backend not in self.search_backends
        ):
            raise ValueError(f"default search backend {self.default_search_backend!r} is not defined")
        for name, preset in self.presets.items():
            if problem := self.tools_problem(preset.tools):
                raise ValueError(f"preset {name!r}: {problem}")
        return self

    def tools_problem(self, tools: list[ToolSpec]) -> str | None:
        """Why these tools cannot be offered with this catalog, or None when they can."""
        for tool in tools:
            if tool.type == "mcp" and tool.server not in self.mcp_servers:
                known = ", ".join(sorted(self.mcp_servers)) or "none"
                return f"unknown MCP server {tool.server!r} (the catalog has: {known})"
            if tool.type == "web_search":
                backend = tool.backend or self.default_search_backend
                if backend is None:
                    return "web_search needs a search backend: set default_search_backend in the catalog"
                if backend not in self.search_backends:
                    known = ", ".join(sorted(self.search_backends)) or "none"
                    return f"unknown search backend {backend!r} (the catalog has: {known})"
        return None

    def model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise CatalogError(f"unknown model {name!r}; the catalog has: {known}") from None

    def preset(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(sorted(self.presets))
            raise CatalogError(f"unknown preset {name!r}; the catalog has: {known}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CatalogError(f"cannot read catalog {path}: {error}") from error


def load_catalog(extra: Path | None = None) -> Catalog:
    data = _read(DEFAULT_CATALOG)
    if extra is not None:
        overlay = _read(extra)
        if overlay.pop("replace", False):
            data = overlay
        else:
            for section in ("providers", "models", "presets", "search_backends", "mcp_servers"):
                data.setdefault(section, {}).update(overlay.get(section, {}))
            for key in ("default_preset", "default_search_backend"):
                if key in overlay:
                    data[key] = overlay[key]
    try:
        return Catalog.model_validate(data)
    except ValidationError as error:
        raise CatalogError(f"invalid catalog: {error}") from error
