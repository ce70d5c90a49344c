"""The Responses API's shapes, pure: a request's input as chat messages, the response object, its
output items and usage (`fusion.gateway.responses_api` serves them)."""

from dataclasses import dataclass
from typing import Any, Final

from fusion_contracts import FusedResult
from pydantic import BaseModel, ConfigDict, Field

from fusion.gateway import openrouter, translate
from fusion.gateway.errors import GatewayError
from fusion.gateway.openai_types import ChatCompletionRequest, FusionOptions
from fusion.gateway.response_store import Message

TEXT_PARTS: Final = frozenset({"input_text", "output_text"})
_ROLES: Final = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
"""Input roles, as chat messages: `developer` is sent as `system`, which every provider takes."""


class ResponsesRequest(BaseModel):
    """The fields of OpenAI's Responses request that the gateway reads. Others that do not change the
    answer (`user`, `include`, `truncation`, `reasoning`, `parallel_tool_calls`...) are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(
        description="`fusion`, `fusion/<preset>`, `openrouter/fusion`, or any catalog model (passed through)."
    )
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    plugins: list[dict[str, Any]] | None = Field(default=None, description="OpenRouter's `fusion` plugin.")
    fusion: FusionOptions | None = None
    store: bool = Field(default=True, description="Keep the response for `previous_response_id`.")
    metadata: dict[str, str] | None = None
    text: dict[str, Any] | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None


# --- the request ---------------------------------------------------------------------------------


def _refuse_unsupported(body: ResponsesRequest, tools: list[dict[str, Any]] | None) -> None:
    """What would change the answer and the gateway cannot do is a 400, never silently dropped."""
    if tools:
        kinds = ", ".join(sorted({str(tool.get("type")) for tool in tools}))
        raise GatewayError.invalid(
            f"tools of type {kinds} are not supported on /v1/responses; "
            f"only {openrouter.FUSION_SERVER_TOOL} is",
            "tools",
        )
    if body.background:
        raise GatewayError.invalid("background responses are not supported; send stream: true", "background")
    if body.conversation is not None:
        raise GatewayError.invalid(
            "conversation objects are not supported; continue with previous_response_id", "conversation"
        )
    if body.prompt is not None:
        raise GatewayError.invalid("prompt templates are not supported; send input", "prompt")
    text_format = (body.text or {}).get("format") or {"type": "text"}
    if text_format.get("type") != "text":
        raise GatewayError.invalid(
            f"text.format {text_format.get('type')!r} is not supported; only text answers", "text"
        )


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise GatewayError.invalid(f"{where}: content must be a string or a list of parts", "input")
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise GatewayError.invalid(
                f"{where}.content[{index}]: content of type {kind!r} is not supported; "
                "this gateway takes text (input_text, output_text)",
                "input",
            )
        texts.append(part["text"])
    return "".join(texts)


def input_messages(items: str | list[dict[str, Any]]) -> list[Message]:
    """`input` as chat messages: a string is one user message; a list holds message items (with or
    without `"type": "message"`) of role user, assistant, system or developer, with text content."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not items:
        raise GatewayError.invalid("input is empty: send a string or at least one message", "input")
    messages = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        kind = item.get("type", "message")
        if kind != "message":
            raise GatewayError.invalid(
                f"{where}: items of type {kind!r} are not supported; send messages with text", "input"
            )
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise GatewayError.invalid(
                f"{where}: role {item.get('role')!r} is not supported; "
                "use user, assistant, system or developer",
                "input",
            )
        messages.append({"role": role, "content": _content(item.get("content"), where)})
    return messages


def chat_request(
    body: ResponsesRequest, history: list[Message]
) -> tuple[ChatCompletionRequest, list[Message]]:
    """The gateway's canonical request for a Responses request, and the conversation it answers (what a
    later `previous_response_id` continues: `instructions` are not carried over, as OpenAI does)."""
    routed = openrouter.route(body.model, body.fusion, body.plugins, body.tools)
    _refuse_unsupported(body, routed.tools)
    conversation = [*history, *input_messages(body.input)]
    instructions = [{"role": "system", "content": body.instructions}] if body.instructions else []
    fields: dict[str, Any] = {
        "model": routed.model,
        "messages": [*instructions, *conversation],
        "stream": body.stream,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.max_output_tokens,
        "fusion": routed.fusion.model_dump(exclude_none=True) if routed.fusion else None,
    }
    if body.stream and not translate.is_fusion_model(routed.model):
        fields["stream_options"] = {"include_usage": True}  # the provider's usage, in its last chunk
    return ChatCompletionRequest.model_validate(fields), conversation


def previous_response_not_found(response_id: str, ttl_s: float, instance_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"previous response {response_id!r} not found: responses are kept for {ttl_s:g} s, in the memory "
        f"of the gateway instance that answered them (this one is {instance_id!r}); send the conversation "
        "in `input` instead, or keep a conversation on one instance",
        "invalid_request_error",
        "previous_response_not_found",
        param="previous_response_id",
    )


# --- the response --------------------------------------------------------------------------------


def responses_usage(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    """A chat completion's usage in the Responses shape; `cost` and `server_tool_use`, when there, kept."""
    counted = chat_usage or {}
    input_tokens = int(counted.get("prompt_tokens") or 0)
    output_tokens = int(counted.get("completion_tokens") or 0)
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": int((counted.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": int(
                (counted.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
            )
        },
        "total_tokens": int(counted.get("total_tokens") or input_tokens + output_tokens),
    }
    usage.update({key: counted[key] for key in ("cost", "server_tool_use") if key in counted})
    return usage


def output_annotations(result: FusedResult, text: str) -> list[dict[str, Any]]:
    """The sources `text` cites, as the Responses API's `url_citation` annotations (flat, unlike chat)."""
    cited = translate.annotations(result.model_copy(update={"answer": text}))
    return [{"type": "url_citation", **note["url_citation"]} for note in cited]


def message_item(
    item_id: str, text: str, status: str = "completed", annotations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [text_part(text, annotations or [])],
    }


def text_part(text: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """What every rendering of one response shares: its ids and what the request asked for."""

    id: str
    created_at: int
    body: ResponsesRequest

    @classmethod
    def start(cls, body: ResponsesRequest, key: str, now: float) -> "ResponseFrame":
        return cls(f"resp_{key}", int(now), body)

    @property
    def message_id(self) -> str:
        return "msg_" + self.id.removeprefix("resp_")

    def render(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": body.model,
            "output": output,
            "parallel_tool_calls": False,
            "previous_response_id": body.previous_response_id,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "tool_choice": body.tool_choice or "auto",
            "tools": body.tools or [],
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "store": body.store,
            "metadata": body.metadata or {},
            "usage": usage,
            **extra,
        }


def fusion_item_id(request_id: str) -> str:
    return f"fusion_{request_id}"


def fused_response(frame: ResponseFrame, result: FusedResult, text: str) -> dict[str, Any]:
    """A fusion's response: OpenRouter's fusion item (the panel, as OpenRouter puts its tool call ahead
    of the answer), then the answer `text`; usage and the `fusion` object as chat completions give
    them."""
    output = [
        openrouter.fusion_output_item(result, fusion_item_id(result.request_id)),
        message_item(frame.message_id, text, annotations=output_annotations(result, text)),
    ]
    usage = responses_usage(translate.usage(result))
    return frame.render("completed", output, usage, fusion=translate.fusion_summary(result))


def passthrough_response(frame: ResponseFrame, reply: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A provider's chat completion as a response, and its text."""
    try:
        choice = reply["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise GatewayError(
            502, "the provider's reply has no message", "api_error", "upstream_error"
        ) from error
    incomplete = choice.get("finish_reason") == "length"
    status = "incomplete" if incomplete else "completed"
    output = [message_item(frame.message_id, str(text), status)]
    body = frame.render(status, output, responses_usage(reply.get("usage")))
    if incomplete:
        body["incomplete_details"] = {"reason": "max_output_tokens"}
    return body, str(text)


# --- the stream ----------------------------------------------------------------------------------
