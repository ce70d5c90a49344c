"""OpenRouter's Fusion shapes, so a client written for OpenRouter's Fusion works against the gateway by
changing its base URL. Pure functions.

OpenRouter documents three entry points to one pipeline (openrouter.ai/docs: "Fusion" plugin,
"Fusion" server tool, "Fusion Router"):

- the model slug `openrouter/fusion`: here an alias of `fusion`, the catalog's default preset;
- the `fusion` plugin, `plugins: [{"id": "fusion", "analysis_models": [...], "model": "...",
  "preset": "...", "max_tool_calls": n, "enabled": true}]`;
- the server tool `{"type": "openrouter:fusion", "parameters": {...}}` in `tools`, whose parameters
  are the plugin's settings but `preset` and `enabled`.

On OpenRouter the request's model decides whether to call the tool; here a request that carries the
plugin or the tool is always fused (as OpenRouter's `tool_choice: "required"` does). `analysis_models`
become the panel, `model` the judge (by default the request's own model when that is a catalog model,
as OpenRouter's analyst defaults to it; else the preset's), `preset` a preset of the catalog.

A fusion is described by the output item OpenRouter returns for the tool (`fusion_output_item`), with
`analysis`, `responses` (each member's answer), `failed_models` and, an addition of this gateway,
`sources`.
"""

from dataclasses import dataclass
from typing import Any, Final, Literal

from fusion_contracts import FusedResult
from fusion_contracts.result import Analysis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusion.gateway.errors import GatewayError
from fusion.gateway.openai_types import FusionOptions
from fusion.gateway.translate import FUSION_MODEL, is_fusion_model
from fusion.kafka.codec import describe

__all__ = [
    "FUSION_PLUGIN_ID",
    "FUSION_SERVER_TOOL",
    "OPENROUTER_FUSION_MODEL",
    "FusionPlugin",
    "FusionServerTool",
    "FusionSettings",
    "Routed",
    "analysis_shape",
    "fusion_item_started",
    "fusion_output_item",
    "gateway_model",
    "route",
]

OPENROUTER_FUSION_MODEL: Final = "openrouter/fusion"
FUSION_PLUGIN_ID: Final = "fusion"
FUSION_SERVER_TOOL: Final = "openrouter:fusion"

_INNER_TOOLS: Final = {"openrouter:web_search": "web_search", "openrouter:web_fetch": "web_fetch"}
"""OpenRouter's research tools for the panel, by this gateway's names (docs/research.md)."""
_INNER_TOOL_PARAMETERS: Final = {
    "web_search": ("max_results", "allowed_domains", "excluded_domains"),
    "web_fetch": ("allowed_domains", "excluded_domains"),
}
"""The parameters of those tools that mean the same here; others (OpenRouter's search engine
choice, for one) have no equivalent and are left out."""


class InnerTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    parameters: dict[str, Any] | None = None


class FusionSettings(BaseModel):
    """The `parameters` of the server tool (OpenRouter's `FusionServerToolConfig`). The plugin, which
    OpenRouter describes as sugar over the tool, takes them too."""

    model_config = ConfigDict(extra="forbid")

    analysis_models: list[str] | None = Field(default=None, description="The panel, catalog model names.")
    model: str | None = Field(default=None, description="The judge; see the module's docstring.")
    max_tool_calls: int | None = None
    temperature: float | None = Field(default=None, description="The members named in analysis_models.")
    max_completion_tokens: int | None = Field(
        default=None, description="The members named in analysis_models."
    )
    tools: list[InnerTool] | None = Field(
        default=None, description="openrouter:web_search and openrouter:web_fetch; [] for none."
    )
    # Accepted and ignored: the judge reasons as the catalog configures it, and caching is the
    # provider's. `mode: "fast"` (one member, no judge) has no equivalent, so only "full" is accepted.
    reasoning: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None
    mode: Literal["full"] | None = None


class FusionPlugin(FusionSettings):
    id: Literal["fusion"]
    enabled: bool = True
    preset: str | None = Field(default=None, description="A preset of the catalog.")


class FusionServerTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["openrouter:fusion"]
    parameters: FusionSettings = FusionSettings()


@dataclass(frozen=True, slots=True)
class Routed:
    """A request once OpenRouter's shapes are read: the gateway's model name, its `fusion` options and
    the tools left for the model (None when there are none)."""

    model: str
    fusion: FusionOptions | None
    tools: list[dict[str, Any]] | None


def gateway_model(model: str) -> str:
    """`openrouter/fusion` is `fusion`; any other name is itself."""
    return FUSION_MODEL if model == OPENROUTER_FUSION_MODEL else model


def route(
    model: str,
    fusion: FusionOptions | None,
    plugins: list[dict[str, Any]] | None,
    tools: list[dict[str, Any]] | None,
) -> Routed:
    """Reads the slug, the `fusion` plugin and the `openrouter:fusion` server tool of a request.

    Plugins other than `fusion` are OpenRouter's own (web search, response healing...) and are left
    out, as a passed-through request drops `plugins` (docs/gateway-api.md). A setting given twice
    (by the plugin, the tool or the `fusion` object) with two values is a 400."""
    model = gateway_model(model)
    plugin = _plugin(plugins)
    tool, rest = _server_tool(tools)
    if plugin is None and tool is None:
        return Routed(model, fusion, tools)
    settings = [found for found in (plugin, tool.parameters if tool else None) if found is not None]
    own_model = None
    if not is_fusion_model(model):
        own_model = model  # the request's model analyses, as on OpenRouter; the catalog checks it
        model = FUSION_MODEL
    if plugin is not None and plugin.preset is not None:
        model = _with_preset(model, plugin.preset)
    options = _options(settings)
    if own_model is not None and "judge" not in options and (fusion is None or fusion.judge is None):
        options["judge"] = own_model  # a default: a judge named anywhere else wins
    return Routed(model, _merged(fusion, options), rest or None)


def _plugin(plugins: list[dict[str, Any]] | None) -> FusionPlugin | None:
    found = [
        (index, plugin)
        for index, plugin in enumerate(plugins or [])
        if isinstance(plugin, dict) and plugin.get("id") == FUSION_PLUGIN_ID
    ]
    if len(found) > 1:
        raise GatewayError.invalid("plugins: the fusion plugin is given more than once", "plugins")
    if not found:
        return None
    index, raw = found[0]
    try:
        plugin = FusionPlugin.model_validate(raw)
    except ValidationError as error:
        raise GatewayError.invalid(f"plugins[{index}] (fusion): {describe(error)}", "plugins") from error
    return plugin if plugin.enabled else None


def _server_tool(
    tools: list[dict[str, Any]] | None,
) -> tuple[FusionServerTool | None, list[dict[str, Any]]]:
    rest = [tool for tool in tools or [] if tool.get("type") != FUSION_SERVER_TOOL]
    found = [(i, tool) for i, tool in enumerate(tools or []) if tool.get("type") == FUSION_SERVER_TOOL]
    if len(found) > 1:
        raise GatewayError.invalid(f"tools: {FUSION_SERVER_TOOL} is given more than once", "tools")
    if not found:
        return None, rest
    index, raw = found[0]
    try:
        return FusionServerTool.model_validate(raw), rest
    except ValidationError as error:
        raise GatewayError.invalid(
            f"tools[{index}] ({FUSION_SERVER_TOOL}): {describe(error)}", "tools"
        ) from error


def _with_preset(model: str, preset: str) -> str:
    named = model.removeprefix(FUSION_MODEL).removeprefix("/")
    if named and named != preset:
        raise GatewayError.invalid(
            f"the model names preset {named!r} and the fusion plugin preset {preset!r}; send one", "plugins"
        )
    return f"{FUSION_MODEL}/{preset}"


def _one(name: str, values: list[Any]) -> Any:
    """The value a setting is given, once; None when it is not given."""
    given = [value for value in values if value is not None]
    if any(value != given[0] for value in given[1:]):
        raise GatewayError.invalid(f"{name} is given twice, with different values", "plugins")
    return given[0] if given else None


def _options(settings: list[FusionSettings]) -> dict[str, Any]:
    """The `fusion` object the settings stand for (only what they set)."""

    def setting(name: str) -> Any:
        return _one(name, [getattr(found, name) for found in settings])

    options: dict[str, Any] = {}
    if (models := setting("analysis_models")) is not None:
        # Sampling settings go to the members named here; a preset's members keep the operator's own.
        sampling = {"temperature": setting("temperature"), "max_tokens": setting("max_completion_tokens")}
        sampling = {key: value for key, value in sampling.items() if value is not None}
        options["panel"] = [{"model": name, **sampling} if sampling else name for name in models]
    if (judge := setting("model")) is not None:
        options["judge"] = judge
    if (max_tool_calls := setting("max_tool_calls")) is not None:
        options["max_tool_calls"] = max_tool_calls
    inner = [found.tools for found in settings if found.tools is not None]
    if inner:
        options["tools"] = _one("tools", [[_inner_tool(tool) for tool in tools] for tools in inner])
    return options


def _inner_tool(tool: InnerTool) -> dict[str, Any]:
    name = _INNER_TOOLS.get(tool.type)
    if name is None:
        known = ", ".join(sorted(_INNER_TOOLS))
        raise GatewayError.invalid(f"fusion tools: {tool.type!r} is not supported; use {known}", "tools")
    parameters = tool.parameters or {}
    return {
        "type": name,
        **{key: parameters[key] for key in _INNER_TOOL_PARAMETERS[name] if key in parameters},
    }


def _merged(fusion: FusionOptions | None, options: dict[str, Any]) -> FusionOptions:
    given = fusion.model_dump(exclude_none=True) if fusion else {}
    for key, value in options.items():
        if key in given and given[key] != _normalized(key, value):
            raise GatewayError.invalid(
                f"fusion.{key} and OpenRouter's fusion plugin or tool both set it, differently; send one",
                "fusion",
            )
    try:
        return FusionOptions.model_validate({**options, **given})
    except ValidationError as error:
        raise GatewayError.invalid(f"fusion plugin or tool: {describe(error)}", "plugins") from error


def _normalized(key: str, value: Any) -> Any:
    try:
        return FusionOptions.model_validate({key: value}).model_dump(exclude_none=True)[key]
    except ValidationError as error:
        raise GatewayError.invalid(f"fusion plugin or tool: {describe(error)}", "plugins") from error


# --- the response item ---------------------------------------------------------------------------


def analysis_shape(analysis: Analysis) -> dict[str, Any]:
    """The judge's analysis as OpenRouter's `FusionAnalysisResult`: a stance, a covered point or an
    insight names models. Results from judges older than the details carry the points in words only:
    those keep their words and name no model."""
    contradictions = [
        {
            "topic": item.topic,
            "stances": [
                {"model": answer.model, "stance": stance.stance}
                for stance in item.stances
                for answer in stance.answers
            ],
        }
        for item in analysis.contradiction_details
    ] or [{"topic": text, "stances": []} for text in analysis.contradictions]
    coverage = [
        {"point": item.point, "models": [answer.model for answer in item.answers]}
        for item in analysis.partial_coverage_details
    ] or [{"point": text, "models": []} for text in analysis.partial_coverage]
    insights = [
        {"insight": item.insight, "model": item.answer.model} for item in analysis.unique_insight_details
    ] or [{"insight": text, "model": ""} for text in analysis.unique_insights]
    return {
        "consensus": list(analysis.consensus),
        "contradictions": contradictions,
        "partial_coverage": coverage,
        "unique_insights": insights,
        "blind_spots": list(analysis.blind_spots),
    }


def fusion_item_started(item_id: str) -> dict[str, Any]:
    """The `openrouter:fusion` item while the fusion runs (`status` is OpenRouter's ToolCallStatus)."""
    return {"type": FUSION_SERVER_TOOL, "id": item_id, "status": "in_progress"}


def fusion_output_item(result: FusedResult, item_id: str) -> dict[str, Any]:
    """The `openrouter:fusion` output item (OpenRouter's `OutputFusionServerToolItem`) for a result with
    an answer: `analysis` when the judge wrote one, `responses` of the members that answered,
    `failed_models` when some did not, and `error` / `failure_reason` when the result is degraded
    (in this gateway's reasons, docs/strategies.md). `sources` is this gateway's addition: the panel's
    sources, as the answer numbers them [n]."""
    item: dict[str, Any] = {
        "type": FUSION_SERVER_TOOL,
        "id": item_id,
        "status": "completed",
        "responses": [
            {"model": member.model, "content": member.text or ""}
            for member in result.members
            if member.status == "ok"
        ],
    }
    if result.analysis is not None:
        item["analysis"] = analysis_shape(result.analysis)
    failed = [
        {
            "model": member.model,
            "error": member.error or member.status,
            **({"status_code": member.error_status} if member.error_status is not None else {}),
        }
        for member in result.members
        if member.status != "ok"
    ]
    if failed:
        item["failed_models"] = failed
    if result.error is not None:
        item["error"] = result.error
    if result.failure_reason is not None:
        item["failure_reason"] = result.failure_reason
    item["sources"] = [source.model_dump() for source in result.sources]
    return item
