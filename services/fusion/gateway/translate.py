"""OpenAI chat completions <-> Fusion contracts. Pure functions."""

from typing import Any, Final

from fusion_contracts import (
    ChatMessage,
    FusedResult,
    FusionProgress,
    FusionRequest,
    ModelSpec,
    Policy,
    ReplyTo,
)
from pydantic import ValidationError

from fusion.catalog import Catalog, CatalogError
from fusion.gateway.errors import GatewayError
from fusion.gateway.openai_types import ChatCompletionRequest, ChatMessageIn, ErrorType, PanelMemberIn
from fusion.kafka.codec import describe

FUSION_MODEL = "fusion"
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


PASSTHROUGH_FIELDS: Final = frozenset(
    {
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "stop",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
"""The request fields of OpenAI's chat completions that a passed-through call forwards. `model` is
the catalog's id for the model and `stream` the adapter's; nothing else goes: no field of another
API (a provider's routing, fallback models, a base URL or a key in the body) and none that acts on
the operator's account rather than on the answer (`store`, `metadata`, `service_tier`)."""

PASSTHROUGH_MESSAGE_FIELDS: Final = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio"}
)
"""The fields of a chat message that are forwarded; its content parts and tools go as given."""


def passthrough_body(body: ChatCompletionRequest, upstream_id: str) -> dict[str, Any]:
    """The body a passed-through call sends its provider: the allowed fields only, for the catalog's
    model (docs/gateway-api.md, "Pass-through")."""
    data = body.model_dump(exclude_none=True)
    payload = {key: value for key, value in data.items() if key in PASSTHROUGH_FIELDS}
    payload["messages"] = [
        {key: value for key, value in message.items() if key in PASSTHROUGH_MESSAGE_FIELDS}
        for message in data["messages"]
    ]
    payload["model"] = upstream_id
    return payload


def is_fusion_model(model: str) -> bool:
    return model == FUSION_MODEL or model.startswith(FUSION_MODEL + "/")


def preset_of(model: str, catalog: Catalog) -> str:
    """`fusion` is the default preset, `fusion/<preset>` that preset; an unknown preset is a 400."""
    preset = model.removeprefix(FUSION_MODEL).removeprefix("/") or catalog.default_preset
    if preset not in catalog.presets:
        known = ", ".join(f"fusion/{name}" for name in sorted(catalog.presets))
        raise GatewayError.invalid(f"unknown preset {preset!r}; use one of: fusion, {known}", "model")
    return preset


def _text(message: ChatMessageIn, index: int) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if part.get("type") == "text"]
        if len(parts) == len(content) and all(isinstance(part, str) for part in parts):
            return "".join(str(part) for part in parts)
        others = sorted({str(part.get("type")) for part in content if part.get("type") != "text"})
        raise GatewayError.invalid(
            f"messages[{index}]: content of type {', '.join(others) or 'text without text'} is not "
            "supported: a fused request takes text content only (no images, audio or files)",
            "messages",
        )
    raise GatewayError.invalid(f"messages[{index}] has no content", "messages")


def to_messages(messages: list[ChatMessageIn]) -> list[ChatMessage]:
    converted = []
    for index, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None or message.tool_calls:
            raise GatewayError.invalid(
                f"messages[{index}]: role {message.role!r} or tool calls cannot be fused; "
                "send system, user and assistant text",
                "messages",
            )
        converted.append({"role": role, "content": _text(message, index), "name": message.name})
    try:
        return [ChatMessage.model_validate(message) for message in converted]
    except ValidationError as error:
        raise GatewayError.invalid(f"messages: {describe(error)}", "messages") from error


def _spec(member: str | PanelMemberIn, catalog: Catalog, where: str) -> ModelSpec:
    data = {"model": member} if isinstance(member, str) else member.model_dump(exclude_none=True)
    try:
        spec = ModelSpec.model_validate(data)
        catalog.model(spec.model)
    except ValidationError as error:
        raise GatewayError.invalid(f"{where}: {describe(error)}", "fusion") from error
    except CatalogError as error:
        raise GatewayError.invalid(f"{where}: {error}", "fusion") from error
    return spec


def _judge(body: ChatCompletionRequest, catalog: Catalog, preset: str) -> ModelSpec:
    """The judge, always explicit: `fusion.judge`, else the preset's (also for a custom panel). It writes
    the answer the client sees, so the client's sampling settings go to it."""
    options = body.fusion
    judge = (
        _spec(options.judge, catalog, "fusion.judge")
        if options and options.judge
        else catalog.preset(preset).judge
    )
    overrides = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "seed": body.seed,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        return ModelSpec.model_validate({**judge.model_dump(), **overrides})
    except ValidationError as error:
        field = str(error.errors()[0]["loc"][0]) if error.errors() else None
        param = "max_tokens" if field == "max_tokens" else field
        raise GatewayError.invalid(describe(error), param) from error


def to_fusion_request(
    body: ChatCompletionRequest, catalog: Catalog, request_id: str, reply_to: ReplyTo, stream: bool
) -> FusionRequest:
    preset = preset_of(body.model, catalog)
    options = body.fusion
    panel = None
    if options and options.panel is not None:
        panel = [_spec(member, catalog, f"fusion.panel[{i}]") for i, member in enumerate(options.panel)]
    policy: dict[str, Any] = {}
    if options:
        policy = {
            key: value
            for key, value in {
                "quorum": options.quorum,
                "grace_s": options.grace_s,
                "deadline_s": options.deadline_s,
            }.items()
            if value is not None
        }
    try:
        return FusionRequest(
            request_id=request_id,
            messages=to_messages(body.messages),
            preset=None if panel is not None else preset,
            panel=panel,
            judge=_judge(body, catalog, preset),
            policy=Policy.model_validate(policy),
            reply_to=reply_to,
            stream=stream,
            strategy=options.strategy if options else None,
            analysis_temperature=options.analysis_temperature if options else None,
            tools=options.tools if options else None,
            max_tool_calls=options.max_tool_calls if options else None,
            progress=bool(stream and options and options.progress),
            metadata={"via": "gateway"},
        )
    except ValidationError as error:
        raise GatewayError.invalid(describe(error), "fusion") from error


def usage(result: FusedResult) -> dict[str, Any]:
    """OpenAI's usage, summed over every call, plus `cost` in dollars as OpenRouter reports it (a
    number); the exact decimal figures are in `fusion.cost`."""
    total = result.usage.total
    counted: dict[str, Any] = {
        "prompt_tokens": total.input_tokens,
        "completion_tokens": total.output_tokens,
        "total_tokens": total.total_tokens,
        "cost": float(result.cost.total_usd),
    }
    if tool_calls := tool_counts(result):
        counted["server_tool_use"] = {f"{name}_requests": count for name, count in tool_calls.items()}
    return counted


def tool_counts(result: FusedResult) -> dict[str, int]:
    """The panel's tool calls, by tool."""
    counts: dict[str, int] = {}
    for member in result.members:
        for name, count in member.tool_calls.items():
            counts[name] = counts.get(name, 0) + count
    return counts


def annotations(result: FusedResult) -> list[dict[str, Any]]:
    """The sources the answer cites, as OpenAI's `url_citation` annotations (for web pages)."""
    answer = result.answer or ""
    notes = []
    for number, source in enumerate(result.sources, start=1):
        marker = f"[{number}]"
        start = answer.find(marker)
        if start < 0:
            continue
        notes.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": source.url,
                    "title": source.title,
                    "start_index": start,
                    "end_index": start + len(marker),
                },
            }
        )
    return notes


def fusion_summary(result: FusedResult) -> dict[str, Any]:
    """The `fusion` object of a response: how the answer came to be."""
    return {
        "request_id": result.request_id,
        "status": result.status,
        "failure_reason": result.failure_reason,
        "error": result.error,
        "strategy": result.strategy,
        "release": result.release,
        "answer_source": result.answer_source,
        "selected_member": result.selected_member,
        "analysis": result.analysis.model_dump(mode="json") if result.analysis else None,
        "members": [
            {
                "index": member.index,
                "model": member.model,
                "status": member.status,
                "latency_ms": member.latency_ms,
                "usage": member.usage.model_dump(),
                "cost_usd": str(member.cost_usd),
                "error": member.error,
                "error_status": member.error_status,
                "tool_calls": member.tool_calls,
                "sources": [source.model_dump() for source in member.sources],
            }
            for member in result.members
        ],
        "sources": [source.model_dump() for source in result.sources],
        "judge": result.judge.model_dump(mode="json") if result.judge else None,
        "cost": result.cost.model_dump(mode="json"),
        "timings": result.timings.model_dump(mode="json"),
    }


def completion(result: FusedResult, model: str, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": result.answer,
                    "annotations": annotations(result),
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage(result),
        "fusion": fusion_summary(result),
    }


def chunk(
    request_id: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def progress_chunk(request_id: str, model: str, created: int, event: FusionProgress) -> dict[str, Any]:
    """A progress event in a chat completion stream: a chunk with no choices (which standard clients
    skip) and the event as `fusion_progress`, named as OpenRouter's Responses events are."""
    body = chunk(request_id, model, created, {})
    body["choices"] = []
    body["fusion_progress"] = {"type": f"response.fusion_call.{event.event}", **progress_fields(event)}
    return body


def progress_fields(event: FusionProgress) -> dict[str, Any]:
    """What a progress event says, for any API's stream (its kind and version left out)."""
    return event.model_dump(mode="json", exclude_none=True, exclude={"kind", "schema_version", "event"})


def result_error(result: FusedResult) -> GatewayError | None:
    """A result without an answer, as the HTTP error it becomes."""
    reason = result.failure_reason
    if result.status == "rejected":
        message = result.error or "the request was rejected"
        return GatewayError(400, message, "invalid_request_error", reason or "invalid_request")
    if result.status == "failed":
        message = result.error or "the fusion failed"
        status, kind = _FAILED_STATUS.get(reason or "", (502, "api_error"))
        return GatewayError(status, message, kind, reason or "fusion_failed", fusion=fusion_summary(result))
    return None


_FAILED_STATUS: dict[str, tuple[int, ErrorType]] = {
    "rate_limited": (429, "rate_limit_error"),
    "deadline": (504, "api_error"),
}
"""The HTTP status of a failed result, by its reason; 502 for the others (no member answered)."""
